"""The service at scale, timed for real: N watched tasks on the emulator, the
change feed on, 20,000 requests a day at 1 request/s. The service runs as its
users run it, ``planfix-notifier run`` in a process of its own, so that its
CPU and memory are its own: first at a fast pace until every task has its
baseline (``planfix_notifier_tasks_awaiting_baseline`` on /metrics), then
afresh on that state, as after a restart, for ``--seconds`` on the wall
clock while the emulator changes a task's status every 6 s. Alerts go to a
webhook here, which notes when each arrives.

Reports the service's CPU as a share of one core (its whole process: planner,
feed, HTTP, XML, store, dispatcher), its RSS (sampled: first and last, to show
a leak), the changes alerted and their delays, change to webhook. Targets at
N = 50,000: CPU <= 5 % of one core, RSS <= 150 MB.

    python -m bench.feed_scale [--tasks 50000] [--seconds 180]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bench.client_overhead import free_port, start_emulator
from notifier.emulator import EmulatorControl
from notifier.store import Store

RESULTS = Path(__file__).parent / "results"
CHANGE_EVERY_S = 6.0
SAMPLE_EVERY_S = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def config(
    port: int,
    folder: str,
    ids: list[int],
    rps: float,
    hook: str,
    metrics: int,
    *,
    daily: int = 20_000,
    feed_interval_s: float = 60.0,
    more: str = "",
) -> str:
    """The service's config: the emulator, a webhook here, /metrics, and ``more``."""
    return f"""
[planfix]
account = "demo"
endpoint = "http://127.0.0.1:{port}/xml/"
api_key = "emulator-api-key"
token = "emulator-token"
daily_quota = {daily}
requests_per_second = {rps}

[state]
path = "{folder}/scale.sqlite3"

[watch]
tasks = {json.dumps(ids)}
feed_interval_s = {feed_interval_s}

[alerts]
group_wait_s = 0

[channels.hook]
type = "webhook"
url = "{hook}"

[metrics]
listen = "127.0.0.1:{metrics}"
{more}"""


def other_status(status: int) -> int:
    """A status the task is not in: setting the one it has changes nothing."""
    return 2 if status != 2 else 1


class Sink:
    """The webhook: when each task's status-change alert arrived."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def take(self, request: web.Request) -> web.Response:
        body = await request.json()
        for event in body.get("events", []):
            if event.get("kind") == "status_changed":
                self.arrived.setdefault(int(event["task_id"]), time.time())
        return web.Response()

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", self.take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


def start_service(path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "notifier", "--log-level", "WARNING", "run", "--config", str(path)],
        stdout=subprocess.DEVNULL,
    )


async def gauge(metrics: int, name: str) -> float | None:
    try:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
    except httpx.HTTPError:
        return None
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def until_gauge(
    metrics: int, name: str, want: float, service: subprocess.Popen[bytes]
) -> None:
    while await gauge(metrics, name) != want:
        if service.poll() is not None:
            raise SystemExit(f"the service stopped ({service.returncode})")
        await asyncio.sleep(1)


async def baselines(path: Path, metrics: int) -> float:
    started = time.monotonic()
    service = start_service(path)
    try:
        await until_gauge(metrics, "planfix_notifier_tasks_awaiting_baseline", 0, service)
    finally:
        stop(service)
    return time.monotonic() - started


async def until_arrived(sink: Sink, changed: dict[int, float], within: int) -> None:
    for _ in range(within):
        if changed.keys() <= sink.arrived.keys():
            return
        await asyncio.sleep(1)


def write_configs(folder: str, port: int, ids: list[int], hook: str) -> tuple[Path, Path, int]:
    """(fast, steady, metrics port): baselines at 100 requests/s, then the real pace."""
    metrics = free_port()
    fast, steady = Path(folder, "fast.toml"), Path(folder, "steady.toml")
    fast.write_text(config(port, folder, ids, 100, hook, metrics))
    steady.write_text(config(port, folder, ids, 1.0, hook, metrics))
    return fast, steady, metrics


async def run(tasks: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    emulator = start_emulator(port, tasks=tasks)
    created = time.monotonic()
    control = EmulatorControl(f"http://127.0.0.1:{port}")
    statuses = {int(t["id"]): int(t.get("status", 1)) for t in control.tasks()}
    ids = list(statuses)
    rng = random.Random(3)
    sink = Sink()
    runner = await sink.start()
    result: dict[str, Any] = {"tasks": tasks, "seconds": seconds}
    try:
        with tempfile.TemporaryDirectory() as folder:
            fast, steady, metrics = write_configs(folder, port, ids, sink.url)
            result["baseline_s"] = await baselines(fast, metrics)
            # Steady state: the feed looked a moment ago, and the account's
            # tasks are older than its window reaches (2 minutes of overlap,
            # and up to one more as dates are whole minutes); else a look would
            # page through them all, just created.
            await asyncio.sleep(max(0.0, 200.0 - (time.monotonic() - created)))
            store = Store(f"{folder}/scale.sqlite3")
            await store.set_meta("feed.cursor", repr(time.time()))
            await store.close()
            service = start_service(steady)
            # Once it has loaded its state, it is steady: measured from here.
            await until_gauge(metrics, "planfix_notifier_watched_tasks", len(ids), service)
            before = control.state()["requests"]
            changed: dict[int, float] = {}
            cpu0, wall0 = cpu_s(service.pid), time.monotonic()
            samples = [rss_mb(service.pid)]
            sampled = wall0
            while time.monotonic() - wall0 < seconds:
                await asyncio.sleep(CHANGE_EVERY_S)
                task = rng.choice([i for i in ids if i not in changed])
                control.change_task(task, status=other_status(statuses[task]))
                changed[task] = time.time()
                if time.monotonic() - sampled >= SAMPLE_EVERY_S:
                    samples.append(rss_mb(service.pid))
                    sampled = time.monotonic()
            # The last changes' look: the feed looks every minute.
            await until_arrived(sink, changed, within=90)
            cpu, wall = cpu_s(service.pid) - cpu0, time.monotonic() - wall0
            samples.append(rss_mb(service.pid))
            stop(service)
            after = control.state()["requests"]
            requests = {m: n - before.get(m, 0) for m, n in after.items() if n > before.get(m, 0)}
    finally:
        await runner.cleanup()
        control.close()
        emulator.terminate()
        emulator.wait(timeout=10)
    delays = [sink.arrived[t] - at for t, at in changed.items() if t in sink.arrived]
    result.update(
        cpu_share=cpu / wall,
        rss_mb=samples[-1],
        rss_first_mb=samples[0],
        rss_peak_mb=max(samples),
        # After the first minute the planner's index is built (the first
        # sample is taken as soon as the state is loaded, before it is).
        rss_settled_mb=samples[min(len(samples) - 1, int(60 / SAMPLE_EVERY_S))],
        rss_samples_mb=[round(x, 1) for x in samples],
        changes=len(changed),
        alerted=len(delays),
        delay_mean_s=statistics.fmean(delays) if delays else float("nan"),
        delay_max_s=max(delays, default=float("nan")),
        requests=requests,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="the service's CPU and memory at scale")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.tasks, args.seconds))
    print(f"{result['tasks']} watched tasks, feed on, 20,000 requests a day at 1/s; "
          f"{result['seconds']:.0f} s on the wall clock")  # fmt: skip
    print("the service in a process of its own, alerts to a webhook")
    print(f"{'baselines (fast pace)':<30}{result['baseline_s']:>9.0f} s")
    print(f"{'service CPU, one core':<30}{result['cpu_share']:>9.1%}   (target <= 5 %)")
    rss = (result["rss_first_mb"], result["rss_settled_mb"], result["rss_mb"])
    print(f"{'RSS loaded / at 1 min / last':<30}{rss[0]:>9.0f} / {rss[1]:.0f} / {rss[2]:.0f} MB"
          "  (target <= 150)")  # fmt: skip
    minutes = result["rss_samples_mb"][:: int(60 / SAMPLE_EVERY_S)]
    print(f"{'RSS each minute':<30} {' '.join(f'{x:.0f}' for x in minutes)} MB")
    print(f"{'status changes made':<30}{result['changes']:>9d}")
    print(f"{'alerted (webhook)':<30}{result['alerted']:>9d}")
    print(f"{'delay mean / max':<30}{result['delay_mean_s']:>6.0f} / {result['delay_max_s']:.0f} s")
    print(f"{'requests while measured':<30} {result['requests']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "feed_scale.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
