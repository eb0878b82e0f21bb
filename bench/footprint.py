"""The service's footprint: 5,000 watched tasks on the emulator (in its own
process, quota raised, task.getMulti off so every poll is a request). First
every task gets its baseline (the service's steady state: it holds each
task's last card); then 10,000 polls, with a status change every 200.
Reports RSS after the baselines, peak RSS, RSS growth from poll 1,000 to poll
10,000 (a leak would show here), and CPU seconds per 1,000 polls.
Targets: peak <= 120 MB, growth <= 5 MB.

    python -m bench.footprint [--tasks 5000] [--polls 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

from bench.client_overhead import free_port, start_emulator
from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import EmulatorControl

RESULTS = Path(__file__).parent / "results"


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(tasks: int, polls: int) -> dict[str, float]:
    port = free_port()
    emulator = start_emulator(port, tasks=tasks)
    control = EmulatorControl(f"http://127.0.0.1:{port}")
    control.configure(supports_multi=False)
    ids = [int(t["id"]) for t in control.tasks()]
    rng = random.Random(5)
    samples: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        config = config_from_dict(
            {
                "planfix": {
                    "account": "demo",
                    "endpoint": f"http://127.0.0.1:{port}/xml/",
                    "api_key": "emulator-api-key",
                    "token": "emulator-token",
                    "daily_quota": 10_000_000,
                    "requests_per_second": 100,
                },
                "state": {"path": f"{folder}/footprint.sqlite3"},
                "watch": {"tasks": ids, "min_interval_s": 1},
                "alerts": {"group_wait_s": 0},
                "channels": {"log": {"type": "console"}},
                "metrics": {"listen": ""},
            },
            source="(footprint bench)",
            environ={},
        )
        service = Service(config)
        await service.load()  # the watch set, as start() would
        service.dispatcher.start()
        while any(r.card is None for r in service.poller.records.values()):
            decision = service.poller.decide()
            if decision.poll:
                await service.poller.poll(decision.poll)
            else:
                await asyncio.sleep(max(0.0, min(decision.wake_at - time.time(), 0.05)))
        gc.collect()
        samples["rss_after_baselines_mb"] = rss_mb()
        done = 0
        cpu_at_1000 = 0.0
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            while done < polls:
                decision = service.poller.decide()
                if not decision.poll:
                    await asyncio.sleep(max(0.0, min(decision.wake_at - time.time(), 0.05)))
                    continue
                await service.poller.poll(decision.poll)
                before = done
                done += len(decision.poll)
                if before // 200 != done // 200:
                    control.change_task(rng.choice(ids), status=rng.choice([1, 2, 3, 4]))
                if before < 1000 <= done:
                    gc.collect()
                    samples["rss_at_1000_mb"] = rss_mb()
                    cpu_at_1000 = time.process_time()
                if done % 2000 < len(decision.poll):
                    printed.truncate(0)  # the console channel's output, not ours to keep
            gc.collect()
            samples["rss_at_end_mb"] = rss_mb()
            cpu = time.process_time() - cpu_at_1000
        events = await service.store.outbox_counts()
        await service.stop()
    control.close()
    emulator.terminate()
    emulator.wait(timeout=10)
    return {
        "tasks": tasks,
        "polls": polls,
        "rss_after_baselines_mb": samples["rss_after_baselines_mb"],
        "peak_rss_mb": peak_rss_mb(),
        "rss_at_1000_mb": samples["rss_at_1000_mb"],
        "rss_at_end_mb": samples["rss_at_end_mb"],
        "rss_growth_mb": samples["rss_at_end_mb"] - samples["rss_at_1000_mb"],
        "cpu_s_per_1000_polls": cpu / ((polls - 1000) / 1000),
        "alerts_sent": events.get("sent", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="memory and CPU of the service")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--polls", type=int, default=10000)
    args = parser.parse_args()
    result = asyncio.run(run(args.tasks, args.polls))
    print(f"{result['tasks']} watched tasks; {result['polls']} task.get polls after the baselines")
    print(f"{'RSS after the baselines':<32}{result['rss_after_baselines_mb']:>8.1f} MB")
    print(f"{'peak RSS':<32}{result['peak_rss_mb']:>8.1f} MB   (target <= 120)")
    print(f"{'RSS at poll 1,000':<32}{result['rss_at_1000_mb']:>8.1f} MB")
    print(f"{'RSS at the last poll':<32}{result['rss_at_end_mb']:>8.1f} MB")
    print(f"{'growth 1,000 → end':<32}{result['rss_growth_mb']:>8.1f} MB   (target <= 5)")
    print(f"{'CPU per 1,000 polls':<32}{result['cpu_s_per_1000_polls']:>8.2f} s")
    print(f"{'alerts sent on the way':<32}{result['alerts_sent']:>8d}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "footprint.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
