"""Push, timed for real: the service in a process of its own (``planfix-notifier
run``, 1 request/s, the change feed off so that only a push can explain a quick
alert), the emulator in another, pushing each change as a PlanFix scenario
does, alerts to a webhook here. The poller is kept busy: 2,000 watched tasks,
50,000 requests a day, a getMulti of 100 cards every ~2 s.

1. Push → alert: 40 changes, 2 s apart, each pushed by the emulator;
   the delay from the change to the alert at the webhook.
2. A burst: 1,000 pushes for 10 changed tasks in 10 s (10 concurrent
   senders); the PlanFix reads they cost (the reserve's count, on /metrics).
3. Forgery: 1,000 pushes with a wrong secret; the alerts and the on-demand
   requests they cost, and the endpoint's answer time while the poller works.

Targets: p50 <= 3 s, p99 <= 10 s; the burst <= 20 requests; forged pushes:
0 alerts, 0 requests; answers p99 <= 50 ms.

    python -m bench.push [--tasks 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import feed_scale
from bench.client_overhead import free_port, start_emulator
from bench.feed_scale import (
    Sink,
    gauge,
    other_status,
    start_service,
    stop,
    until_arrived,
    until_gauge,
)
from notifier.emulator import EmulatorControl

RESULTS = Path(__file__).parent / "results"
SECRET = "bench-push-secret"  # noqa: S105 (the bench's own, on loopback)
ON_DEMAND = "planfix_notifier_quota_on_demand_used"
GAUGES_S = 16  # the service refreshes its gauges every 15 s


def config(port: int, folder: str, ids: list[int], hook: str, metrics: int, push: int) -> str:
    """As bench.feed_scale's, busier, the feed off, and a push listener."""
    listener = f'[push]\nlisten = "127.0.0.1:{push}"\nsecret = "{SECRET}"\n'
    return feed_scale.config(
        port, folder, ids, 1.0, hook, metrics, daily=50_000, feed_interval_s=0, more=listener
    )


def write_config(folder: str, text: str) -> Path:
    path = Path(folder, "push.toml")
    path.write_text(text)
    return path


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def timed_posts(url: str, bodies: list[dict[str, int]], secret: str, senders: int) -> list[
    tuple[int, float]
]:  # fmt: skip
    """(status, seconds) of each POST, ``senders`` at a time."""
    results: list[tuple[int, float]] = []
    queue = list(bodies)

    async def sender(http: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            answer = await http.post(url, json=body, headers={"X-Notifier-Secret": secret})
            results.append((answer.status_code, time.perf_counter() - started))
            await asyncio.sleep(0.01 * senders)  # ~100 a second in all

    async with httpx.AsyncClient(timeout=10.0) as http:
        await asyncio.gather(*(sender(http) for _ in range(senders)))
    return results


async def run(tasks: int) -> dict[str, Any]:
    port = free_port()
    emulator = start_emulator(port, tasks=tasks)
    control = EmulatorControl(f"http://127.0.0.1:{port}")
    statuses = {int(t["id"]): int(t.get("status", 1)) for t in control.tasks()}
    ids = list(statuses)
    rng = random.Random(11)
    sink = Sink()
    runner = await sink.start()
    result: dict[str, Any] = {"tasks": tasks}
    try:
        with tempfile.TemporaryDirectory() as folder:
            metrics, push = free_port(), free_port()
            path = write_config(folder, config(port, folder, ids, sink.url, metrics, push))
            service = start_service(path)
            url = f"http://127.0.0.1:{push}/planfix"
            try:
                await until_gauge(metrics, "planfix_notifier_tasks_awaiting_baseline", 0, service)
                control.configure(push_url=url, push_secret=SECRET)
                picked = rng.sample(ids, 50)
                # 1. push → alert, the emulator pushing as PlanFix does
                changed: dict[int, float] = {}
                for task in picked[:40]:
                    control.change_task(task, status=other_status(statuses[task]))
                    changed[task] = time.time()
                    await asyncio.sleep(2)
                await until_arrived(sink, changed, within=30)
                delays = [sink.arrived[t] - at for t, at in changed.items() if t in sink.arrived]
                result.update(
                    alerted=len(delays),
                    changes=len(changed),
                    delay_p50_s=quantile(delays, 0.5),
                    delay_p99_s=quantile(delays, 0.99),
                )
                control.configure(push_url="")  # from here the bench sends
                # 2. a burst for 10 changed tasks
                burst = picked[40:50]
                for task in burst:
                    control.change_task(task, status=other_status(statuses[task]))
                await asyncio.sleep(GAUGES_S)
                before = await gauge(metrics, ON_DEMAND) or 0.0
                bodies = [{"task": burst[i % 10]} for i in range(1000)]
                answers = await timed_posts(url, bodies, SECRET, senders=10)
                await until_arrived(sink, dict.fromkeys(burst, 0.0), within=40)
                await asyncio.sleep(GAUGES_S + 30)  # and the reads owed to the burst's tail
                result.update(
                    burst_accepted=sum(status == 200 for status, _ in answers),
                    burst_alerted=sum(t in sink.arrived for t in burst),
                    burst_requests=(await gauge(metrics, ON_DEMAND) or 0.0) - before,
                )
                # 3. forgery, while the poller works
                alerts = len(sink.arrived)
                before = await gauge(metrics, ON_DEMAND) or 0.0
                bodies = [{"task": rng.choice(ids)} for _ in range(1000)]
                forged = await timed_posts(url, bodies, "not-the-secret", senders=1)
                await asyncio.sleep(GAUGES_S)
                times = [seconds for _, seconds in forged + answers]
                result.update(
                    forged_refused=sum(status == 401 for status, _ in forged),
                    forged_alerts=len(sink.arrived) - alerts,
                    forged_requests=(await gauge(metrics, ON_DEMAND) or 0.0) - before,
                    answer_p50_ms=1000 * quantile(times, 0.5),
                    answer_p99_ms=1000 * quantile(times, 0.99),
                )
            finally:
                stop(service)
    finally:
        await runner.cleanup()
        control.close()
        emulator.terminate()
        emulator.wait(timeout=10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="push → alert, bursts and forgeries")
    parser.add_argument("--tasks", type=int, default=2000)
    args = parser.parse_args()
    r = asyncio.run(run(args.tasks))
    print(f"{r['tasks']} watched tasks, the service at 1 request/s, feed off, pushes from "
          "the emulator")  # fmt: skip
    print(f"{'push → alert p50 / p99':<34}{r['delay_p50_s']:>6.1f} / {r['delay_p99_s']:.1f} s"
          f"   ({r['alerted']}/{r['changes']} alerted; target <= 3 / <= 10 s)")  # fmt: skip
    print(f"{'burst: 1,000 pushes, 10 tasks':<34}{r['burst_requests']:>6.0f} requests"
          f"   ({r['burst_accepted']} accepted, {r['burst_alerted']}/10 alerted; "
          "target <= 20)")  # fmt: skip
    print(f"{'forged: 1,000 wrong secrets':<34}{r['forged_requests']:>6.0f} requests, "
          f"{r['forged_alerts']} alerts   ({r['forged_refused']} refused 401; "
          "target 0, 0)")  # fmt: skip
    print(f"{'answer time p50 / p99':<34}{r['answer_p50_ms']:>6.1f} / {r['answer_p99_ms']:.1f} ms"
          "   (target p99 <= 50 ms)")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "push.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
