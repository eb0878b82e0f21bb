"""Detection delay for a fixed daily budget: a virtual-time simulation (no
sleeping) that drives the real planner code.

Workload (seeded): ~10 % hot tasks changing several times a day, ~30 % warm,
~60 % cold or finished; about half of the unfinished tasks have a deadline,
spread across the measured day. A warm-up day lets the planner learn change
rates (as a running service has); the figures are for the day after it.

Strategies, each with the same budget (5000 requests/day) and 1 request/s:
  (a) uniform round-robin with task.get — the obvious baseline;
  (b) our planner, task.get only;
  (c) our planner with task.getMulti (up to 100 tasks a request);
  (d) the oracle square-root bound L* = (Σ√λ)² / (2·B·Σλ) for task.get.

    python -m bench.detection_latency [--tasks 50 500 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from notifier.watch.planner import (
    DAY_S,
    Budget,
    PlannerSettings,
    TaskView,
    learn,
    plan,
    rate_per_day,
)
from notifier.watch.quota import reserve_now

RESULTS = Path(__file__).parent / "results"
BUDGET = 5000
RESERVE = 0.05
WARMUP_DAYS = 1


@dataclass
class SimTask:
    task_id: int
    rate: float  # true changes per day
    finished: bool
    deadline: float | None
    changes: list[float]  # change times, sorted
    last_poll: float = 0.0
    seen_changes: int = 0  # changes up to the last poll
    overdue_seen: bool = False
    close_seen: bool = False
    learned: tuple[float, float] = (0.0, 0.0)


@dataclass
class Outcome:
    requests: int = 0
    change_delays: list[float] = field(default_factory=list)
    overdue_delays: list[float] = field(default_factory=list)
    hourly: list[int] = field(default_factory=lambda: [0] * 24)


def workload(n: int, seed: int, start: float, days: int) -> list[SimTask]:
    rng = random.Random(seed)
    tasks = []
    end = start + days * DAY_S
    measured = start + WARMUP_DAYS * DAY_S
    for i in range(n):
        roll = rng.random()
        finished = False
        if roll < 0.10:
            rate = rng.uniform(3, 8)  # hot
        elif roll < 0.40:
            rate = rng.uniform(0.3, 1.0)  # warm
        else:
            finished = rng.random() < 0.5
            rate = rng.uniform(0.01, 0.05) if finished else rng.uniform(0.02, 0.1)  # cold
        changes, t = [], start
        while True:
            t += rng.expovariate(rate / DAY_S)
            if t >= end:
                break
            changes.append(t)
        deadline = None
        if not finished and rng.random() < 0.5:
            deadline = measured + rng.uniform(0, DAY_S)
        tasks.append(SimTask(i + 1, rate, finished, deadline, changes))
    return tasks


def observe(task: SimTask, now: float, out: Outcome | None, window: float) -> bool:
    """Poll ``task`` at ``now``: record each change's delay; True if any change."""
    upto = bisect.bisect_right(task.changes, now)
    new = task.changes[task.seen_changes : upto]
    if out is not None:
        out.change_delays.extend(now - c for c in new if c >= window)
    task.seen_changes = upto
    if task.deadline is not None and not task.overdue_seen and now >= task.deadline:
        task.overdue_seen = True
        if out is not None and task.deadline >= window:
            out.overdue_delays.append(now - task.deadline)
    if task.deadline is not None and now >= task.deadline - DAY_S:
        task.close_seen = True
    elapsed = now - task.last_poll
    task.learned = learn(*task.learned, bool(new), elapsed)
    task.last_poll = now
    return bool(new)


def view(task: SimTask) -> TaskView:
    return TaskView(
        task_id=task.task_id,
        last_poll_at=task.last_poll,
        deadline=task.deadline,
        overdue_seen=task.overdue_seen,
        close_seen=task.close_seen,
        finished=task.finished,
        rate_per_day=rate_per_day(*task.learned),
    )


class Strategy(Protocol):
    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        """(indexes of the tasks to poll now, or none and when to come back)."""

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        """Told after each request."""


class RoundRobin:
    """Every task in turn, requests evenly spaced over the day."""

    def __init__(self) -> None:
        self.cursor = 0

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        gap = DAY_S / BUDGET
        if last is not None and now < last + gap:
            return [], last + gap
        self.cursor += 1
        return [(self.cursor - 1) % len(tasks)], now

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        return None


class Planner:
    """The service's planner, fed the same figures the quota ledger gives it."""

    def __init__(self, batch: int) -> None:
        self.settings = PlannerSettings(batch_size=batch)
        self.views: list[TaskView] = []

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        if len(self.views) != len(tasks):
            self.views = [view(t) for t in tasks]
        day_end = (math.floor(now / DAY_S) + 1) * DAY_S
        held = reserve_now(BUDGET, RESERVE, day_end - now)
        budget = Budget(
            remaining=left,
            available=max(0, left - held),
            resets_at=day_end,
            daily=int(BUDGET * (1 - RESERVE)),
            last_request_at=last,
            requests_last_hour=len(sent) - bisect.bisect_left(sent, now - 3600),
        )
        decision = plan(self.views, budget, now, self.settings)
        return [task_id - 1 for task_id in decision.poll], decision.wake_at

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        for index in indexes:
            self.views[index] = view(tasks[index])


def simulate(tasks: list[SimTask], strategy: Strategy, start: float, days: int) -> Outcome:
    out = Outcome()
    window = start + WARMUP_DAYS * DAY_S
    now, last = start, None
    used_today, day = 0, 0
    sent: list[float] = []
    end = start + days * DAY_S
    while now < end:
        today = int((now - start) // DAY_S)
        if today != day:
            day, used_today = today, 0
        chosen, wake = strategy.decide(tasks, now, BUDGET - used_today, last, sent)
        if not chosen:
            now = max(wake, now + 0.001)
            continue
        used_today += 1
        last = now
        sent.append(now)
        measuring = now >= window
        if measuring:
            out.requests += 1
            out.hourly[int((now - window) // 3600) % 24] += 1
        for index in chosen:
            observe(tasks[index], now, out if measuring else None, window)
        strategy.polled(tasks, chosen)
        now += 1.0  # the rate limit: one request a second
    return out


def oracle_minutes(tasks: Sequence[SimTask]) -> float:
    rates = [t.rate / DAY_S for t in tasks]
    b = BUDGET / DAY_S
    return (sum(math.sqrt(r) for r in rates) ** 2) / (2 * b * sum(rates)) / 60


def p95(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(name: str, out: Outcome) -> dict[str, object]:
    share = out.requests / 24 or 1
    return {
        "strategy": name,
        "requests": out.requests,
        "budget_used": out.requests / BUDGET,
        "change_mean_min": mean(out.change_delays) / 60,
        "change_p95_min": p95(out.change_delays) / 60,
        "changes": len(out.change_delays),
        "overdue_mean_min": mean(out.overdue_delays) / 60,
        "overdue_p95_min": p95(out.overdue_delays) / 60,
        "overdues": len(out.overdue_delays),
        "max_hour_share": max(out.hourly) / share,
    }


def run(n: int, seed: int) -> list[dict[str, object]]:
    start = 0.0
    days = WARMUP_DAYS + 1
    rows = []
    strategies: list[tuple[str, Callable[[], Strategy]]] = [
        ("(a) round-robin task.get", RoundRobin),
        ("(b) planner task.get", lambda: Planner(1)),
        ("(c) planner task.getMulti", lambda: Planner(100)),
    ]
    for name, make in strategies:
        tasks = workload(n, seed, start, days)
        started = time.perf_counter()
        out = simulate(tasks, make(), start, days)
        row = summarize(name, out)
        row["sim_seconds"] = time.perf_counter() - started
        rows.append(row)
    rows.append(
        {
            "strategy": "(d) oracle √-bound task.get",
            "change_mean_min": oracle_minutes(workload(n, seed, start, days)),
        }
    )
    return rows


def fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description="detection delay per strategy")
    parser.add_argument("--tasks", type=int, nargs="+", default=[50, 500, 5000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, list[dict[str, object]]] = {}
    header = (
        f"{'N':>5} {'strategy':<30}{'requests':>9}{'used':>7}{'chg mean':>10}{'chg p95':>9}"
        f"{'ovd mean':>10}{'ovd p95':>9}{'max hr':>8}"
    )
    print(f"budget {BUDGET}/day, delays in minutes, measured over the day after a warm-up day")
    print(header)
    for n in args.tasks:
        rows = run(n, args.seed)
        results[str(n)] = rows
        for row in rows:
            cells = [
                (row.get("requests"), "d", 9),
                (row.get("budget_used"), ".0%", 7),
                (row.get("change_mean_min"), ".2f", 10),
                (row.get("change_p95_min"), ".1f", 9),
                (row.get("overdue_mean_min"), ".2f", 10),
                (row.get("overdue_p95_min"), ".2f", 9),
                (row.get("max_hour_share"), ".2f", 8),
            ]
            line = "".join(f"{fmt(value, spec):>{width}}" for value, spec, width in cells)
            print(f"{n:>5} {row['strategy']:<30}{line}")
        a, b = rows[0], rows[1]
        ratio = float(b["change_mean_min"]) / float(a["change_mean_min"])  # type: ignore[arg-type]
        print(f"{n:>5} (b)/(a) mean status-change delay: {ratio:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_latency.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
