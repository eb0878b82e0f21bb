"""The service at scale, timed for real: N watched tasks on the emulator (in
its own process), the change feed on, 20,000 requests a day at 1 request/s.
The baselines are taken first at a fast pace; then the service is started
afresh on that state, as after a restart, and runs on the wall clock for
``--seconds`` while the emulator changes a task's status every 6 s.

Reports the service's CPU as a share of one core (its whole process: planner,
feed, HTTP, XML, store, dispatcher), its RSS, the changes alerted and their
delays. Targets at N = 50,000: CPU <= 5 % of one core, RSS <= 150 MB.

    python -m bench.feed_scale [--tasks 50000] [--seconds 180]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.client_overhead import free_port, start_emulator
from bench.footprint import rss_mb
from notifier.alerts.events import Event, EventKind
from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import EmulatorControl
from notifier.ops import logging as oplog
from notifier.store import Store

RESULTS = Path(__file__).parent / "results"
CHANGE_EVERY_S = 6.0


def config(port: int, folder: str, ids: list[int], rps: float) -> dict[str, Any]:
    return {
        "planfix": {
            "account": "demo",
            "endpoint": f"http://127.0.0.1:{port}/xml/",
            "api_key": "emulator-api-key",
            "token": "emulator-token",
            "daily_quota": 20_000,
            "requests_per_second": rps,
        },
        "state": {"path": f"{folder}/scale.sqlite3"},
        "watch": {"tasks": ids},
        "alerts": {"group_wait_s": 0},
        "channels": {"log": {"type": "console"}},
        "metrics": {"listen": ""},
    }


async def baselines(port: int, folder: str, ids: list[int]) -> float:
    started = time.monotonic()
    service = Service(config_from_dict(config(port, folder, ids, 100), source="bench", environ={}))
    while any(r.snapshot is None for r in service.poller.records.values()):
        await service.poller.tick(for_s=5)
    await service.stop()
    return time.monotonic() - started


async def run(tasks: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    emulator = start_emulator(port, tasks=tasks)
    created = time.monotonic()
    control = EmulatorControl(f"http://127.0.0.1:{port}")
    ids = [int(t["id"]) for t in control.tasks()]
    rng = random.Random(3)
    result: dict[str, Any] = {"tasks": tasks, "seconds": seconds}
    try:
        with tempfile.TemporaryDirectory() as folder:
            result["baseline_s"] = await baselines(port, folder, ids)
            # Steady state: the feed looked a moment ago, and the account's
            # tasks are older than its window reaches (2 minutes of overlap,
            # and up to one more as dates are whole minutes); else a look would
            # page through them all, just created.
            await asyncio.sleep(max(0.0, 200.0 - (time.monotonic() - created)))
            store = Store(f"{folder}/scale.sqlite3")
            store.set_meta("feed.cursor", repr(time.time()))
            store.close()
            gc.collect()
            data = config(port, folder, ids, 1.0)
            service = Service(config_from_dict(data, source="bench", environ={}))
            changed: dict[int, float] = {}  # task → when it was changed
            seen: list[float] = []  # delays, change → event stored

            def collect(stored: Sequence[tuple[int, Event]]) -> None:
                for _, event in stored:
                    if event.kind is EventKind.STATUS_CHANGED and event.task_id in changed:
                        seen.append(time.time() - changed.pop(event.task_id))

            service.poller.on_events = collect
            before = control.state()["requests"]
            with contextlib.redirect_stdout(io.StringIO()):
                service.start()
                cpu0, wall0 = time.process_time(), time.monotonic()
                status = 1
                while time.monotonic() - wall0 < seconds:
                    await asyncio.sleep(CHANGE_EVERY_S)
                    task = rng.choice(ids)
                    status = 2 if status == 1 else 1
                    control.change_task(task, status=status)
                    changed[task] = time.time()
                await asyncio.sleep(5)  # the last change's look
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                result["rss_mb"] = rss_mb()
                await service.stop()
            after = control.state()["requests"]
            requests = {m: n - before.get(m, 0) for m, n in after.items() if n > before.get(m, 0)}
    finally:
        control.close()
        emulator.terminate()
        emulator.wait(timeout=10)
    made = int(seconds // CHANGE_EVERY_S)
    result.update(
        cpu_share=cpu / wall,
        changes=made,
        alerted=len(seen),
        delay_mean_s=statistics.fmean(seen) if seen else float("nan"),
        delay_max_s=max(seen, default=float("nan")),
        requests=requests,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="the service's CPU and memory at scale")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    oplog.setup(level="WARNING")
    result = asyncio.run(run(args.tasks, args.seconds))
    print(f"{result['tasks']} watched tasks, feed on, 20,000 requests a day at 1/s; "
          f"{result['seconds']:.0f} s on the wall clock")  # fmt: skip
    print(f"{'baselines (fast pace)':<30}{result['baseline_s']:>9.0f} s")
    print(f"{'service CPU, one core':<30}{result['cpu_share']:>9.1%}   (target <= 5 %)")
    print(f"{'RSS':<30}{result['rss_mb']:>9.0f} MB  (target <= 150)")
    print(f"{'status changes made':<30}{result['changes']:>9d}")
    print(f"{'alerted':<30}{result['alerted']:>9d}")
    print(f"{'delay mean / max':<30}{result['delay_mean_s']:>6.0f} / {result['delay_max_s']:.0f} s")
    print(f"{'requests while measured':<30} {result['requests']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feed_scale.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
