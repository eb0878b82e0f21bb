"""Detection delay for a fixed daily budget: a virtual-time simulation (no
sleeping) that drives the real planner code.

Workload (seeded): ~10 % hot tasks changing several times a day, ~30 % warm,
~60 % cold or finished; about half of the unfinished tasks have a deadline,
spread across the measured day. A warm-up day lets the planner learn change
rates (as a running service has); the figures are for the day after it.

Strategies, each with the same daily budget and 1 request/s:
  (a) uniform round-robin with task.get — the obvious baseline;
  (b) our planner, task.get only;
  (c) our planner with task.getMulti (up to 100 tasks a request);
  (d) the oracle square-root bound L* = (Σ√λ)² / (2·B·Σλ) for task.get;
  (e) the change feed (task.getList by last change, every 60 s, a page per
      100 changed tasks) + the planner's deadline polls + its rotation with
      task.getMulti as the safety net.
5 % of the changes are silent (made through the API in silent mode): no
feed sees them, only a poll of the task. The planner runs as the service
runs it, through its index (watch/schedule.py).

    python -m bench.detection_latency [--tasks 500 5000 50000] [--budgets 5000 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from notifier.watch.feed import MOST_SHARE
from notifier.watch.planner import (
    DAY_S,
    Budget,
    Candidate,
    PlannerSettings,
    TaskView,
    decide,
    learn,
    rate_per_day,
)
from notifier.watch.quota import reserve_now
from notifier.watch.schedule import PlanIndex

RESULTS = Path(__file__).parent / "results"
RESERVE = 0.05
SILENT = 0.05  # of the changes
FEED_S = 60.0
OVERLAP_S = 120.0
WARMUP_DAYS = 1


@dataclass
class SimTask:
    task_id: int
    rate: float  # true changes per day
    finished: bool
    deadline: float | None
    changes: list[float]  # change times, sorted
    silent: list[bool]  # each change: made in silent mode (no feed sees it)
    last_poll: float = 0.0
    seen_changes: int = 0  # changes up to the last poll
    overdue_seen: bool = False
    close_seen: bool = False
    learned: tuple[float, float] = (0.0, 0.0)


@dataclass
class Outcome:
    requests: int = 0
    change_delays: list[float] = field(default_factory=list)
    silent_delays: list[float] = field(default_factory=list)
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
        silent = [rng.random() < SILENT for _ in changes]
        deadline = None
        if not finished and rng.random() < 0.5:
            deadline = measured + rng.uniform(0, DAY_S)
        tasks.append(SimTask(i + 1, rate, finished, deadline, changes, silent))
    return tasks


def observe(task: SimTask, now: float, out: Outcome | None, window: float) -> bool:
    """Poll ``task`` at ``now``: record each change's delay; True if any change."""
    upto = bisect.bisect_right(task.changes, now)
    new = task.changes[task.seen_changes : upto]
    if out is not None:
        for at, silent in zip(new, task.silent[task.seen_changes : upto], strict=True):
            if at >= window:
                (out.silent_delays if silent else out.change_delays).append(now - at)
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
    extra: int  # requests spent inside decide() (the feed's looks), taken by simulate()

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        """(indexes of the tasks to poll now, or none and when to come back)."""

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        """Told after each request."""


class RoundRobin:
    """Every task in turn, requests evenly spaced over the day."""

    def __init__(self, budget: int) -> None:
        self.cursor, self.budget, self.extra = 0, budget, 0

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        gap = DAY_S / self.budget
        if last is not None and now < last + gap:
            return [], last + gap
        self.cursor += 1
        return [(self.cursor - 1) % len(tasks)], now

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        return None


class Planner:
    """The service's planner and its index, fed the figures the quota ledger gives it."""

    def __init__(self, budget: int, batch: int) -> None:
        self.settings = PlannerSettings(batch_size=batch)
        self.budget, self.extra = budget, 0
        self.index: PlanIndex | None = None

    def held(self, seconds_left: float, left: int) -> int:
        """Requests kept from the planner (the feed's, in (e))."""
        return 0

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        index = self.indexed(tasks)
        day_end = (math.floor(now / DAY_S) + 1) * DAY_S
        held = reserve_now(self.budget, RESERVE, day_end - now)
        feed = self.held(day_end - now, max(0, left - held))
        budget = Budget(
            remaining=max(0, left - feed),
            available=max(0, left - held - feed),
            resets_at=day_end,
            daily=int(self.budget * (1 - RESERVE)),
            last_request_at=last,
            requests_last_hour=len(sent) - bisect.bisect_left(sent, now - 3600),
        )
        decision = decide(budget, now, self.settings, lambda room: index.due(now, room))
        return [task_id - 1 for task_id in decision.poll], decision.wake_at

    def indexed(self, tasks: list[SimTask]) -> PlanIndex:
        if self.index is None:
            self.index = PlanIndex()
            for task in tasks:
                self.index.update(Candidate.of(view(task), self.settings))
        return self.index

    def polled(self, tasks: list[SimTask], indexes: list[int]) -> None:
        index = self.indexed(tasks)
        for i in indexes:
            index.update(Candidate.of(view(tasks[i]), self.settings))


class FeedPlanner(Planner):
    """(e): a look at the change feed every FEED_S, then the planner."""

    def __init__(self, budget: int, out: list[Outcome], window: float) -> None:
        super().__init__(budget, 100)
        self.out, self.window = out, window
        self.looked_at = -math.inf
        self.cursor = -math.inf
        self.spacing = FEED_S
        self.timeline: list[tuple[float, int]] = []  # (change time, task index), not silent

    @property
    def next_look(self) -> float:
        """As the service's feed: spacing recomputed from the budget left."""
        return self.looked_at + min(self.spacing, DAY_S)

    def held(self, seconds_left: float, left: int) -> int:
        affordable = MOST_SHARE * self.budget * (1 - RESERVE)  # the service's rule
        self.spacing = max(FEED_S, DAY_S / affordable)
        return min(left, math.ceil(seconds_left / self.spacing))

    def decide(
        self, tasks: list[SimTask], now: float, left: int, last: float | None, sent: list[float]
    ) -> tuple[list[int], float]:
        if not self.timeline:
            self.timeline = sorted(
                (at, i)
                for i, task in enumerate(tasks)
                for at, silent in zip(task.changes, task.silent, strict=True)
                if not silent
            )
        if now >= self.next_look and left > 0 and (last is None or now >= last + 1.0):
            self.look(tasks, now, left)
            return [], now + 1.0  # the look was this second's request
        chosen, wake = super().decide(tasks, now, left, last, sent)
        return chosen, min(wake, self.next_look)

    def look(self, tasks: list[SimTask], now: float, left: int) -> None:
        since = max(self.cursor, now - DAY_S) - OVERLAP_S
        lo = bisect.bisect_right(self.timeline, (since, len(tasks)))
        hi = bisect.bisect_right(self.timeline, (now, len(tasks)))
        changed = sorted({i for _, i in self.timeline[lo:hi]})
        pages = max(1, math.ceil(len(changed) / 100))
        self.extra += min(pages, left)
        measuring = now >= self.window
        for i in changed:  # the cards came with the list: each is a poll of its task
            observe(tasks[i], now, self.out[0] if measuring else None, self.window)
        self.polled(tasks, changed)
        self.cursor = self.looked_at = now


def simulate(tasks: list[SimTask], strategy: Strategy, start: float, days: int, budget: int,
             out: Outcome) -> Outcome:  # fmt: skip
    window = start + WARMUP_DAYS * DAY_S
    now, last = start, None
    used_today, day = 0, 0
    sent: list[float] = []
    end = start + days * DAY_S
    while now < end:
        today = int((now - start) // DAY_S)
        if today != day:
            day, used_today = today, 0
        chosen, wake = strategy.decide(tasks, now, budget - used_today, last, sent)
        if strategy.extra:  # the feed looked: its requests count like any
            used_today += strategy.extra
            if now >= window:
                out.requests += strategy.extra
                out.hourly[int((now - window) // 3600) % 24] += strategy.extra
            last = now
            sent.extend([now] * strategy.extra)
            strategy.extra = 0
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


def oracle_minutes(tasks: Sequence[SimTask], budget: int) -> float:
    rates = [t.rate / DAY_S for t in tasks]
    b = budget / DAY_S
    return (sum(math.sqrt(r) for r in rates) ** 2) / (2 * b * sum(rates)) / 60


def p95(values: Sequence[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def summarize(name: str, out: Outcome, budget: int) -> dict[str, object]:
    share = out.requests / 24 or 1
    return {
        "strategy": name,
        "requests": out.requests,
        "budget_used": out.requests / budget,
        "change_mean_min": mean(out.change_delays) / 60,
        "change_p95_min": p95(out.change_delays) / 60,
        "changes": len(out.change_delays),
        "silent_mean_min": mean(out.silent_delays) / 60,
        "silent_max_min": max(out.silent_delays, default=float("nan")) / 60,
        "overdue_mean_min": mean(out.overdue_delays) / 60,
        "overdue_p95_min": p95(out.overdue_delays) / 60,
        "overdues": len(out.overdue_delays),
        "max_hour_share": max(out.hourly) / share,
    }


STRATEGIES = (
    "(a) round-robin task.get",
    "(b) planner task.get",
    "(c) planner task.getMulti",
    "(e) feed + planner getMulti",
)


def strategy(name: str, budget: int, out: Outcome, window: float) -> Strategy:
    if name.startswith("(a)"):
        return RoundRobin(budget)
    if name.startswith("(b)"):
        return Planner(budget, 1)
    if name.startswith("(c)"):
        return Planner(budget, 100)
    return FeedPlanner(budget, [out], window)


def run_one(n: int, budget: int, seed: int, name: str) -> dict[str, object]:
    """One strategy on one cell of the table (a job of its own: cells run in
    parallel, one process a core)."""
    start = 0.0
    days = WARMUP_DAYS + 1
    window = start + WARMUP_DAYS * DAY_S
    tasks = workload(n, seed, start, days)
    started = time.process_time()
    out = Outcome()
    simulate(tasks, strategy(name, budget, out, window), start, days, budget, out)
    row = summarize(name, out, budget)
    row["sim_seconds"] = time.process_time() - started
    return row


Rows = list[dict[str, object]]


def run(cells: Sequence[tuple[int, int]], seed: int) -> dict[tuple[int, int], Rows]:
    """Every strategy on every cell, the biggest jobs first."""
    jobs = sorted(
        ((n, budget, name) for n, budget in cells for name in STRATEGIES),
        key=lambda job: -job[0] * job[1] * name_cost(job[2]),
    )
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {job: pool.submit(run_one, job[0], job[1], seed, job[2]) for job in jobs}
        rows: dict[tuple[int, int], Rows] = {}
        for n, budget in cells:
            rows[(n, budget)] = [futures[(n, budget, name)].result() for name in STRATEGIES]
            rows[(n, budget)].append(
                {
                    "strategy": "(d) oracle √-bound task.get",
                    "change_mean_min": oracle_minutes(workload(n, seed, 0.0, 2), budget),
                }
            )
    return rows


def name_cost(name: str) -> int:
    """A job's rough cost, to start the long ones first."""
    return 100 if name[1] in "ce" else 1


def fmt(value: object, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description="detection delay per strategy")
    parser.add_argument("--tasks", type=int, nargs="+", default=[500, 5000, 50000])
    parser.add_argument("--budgets", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results: dict[str, list[dict[str, object]]] = {}
    header = (
        f"{'N':>6} {'budget':>6} {'strategy':<28}{'used':>6}{'chg mean':>9}{'chg p95':>9}"
        f"{'silent':>8}{'sil max':>9}{'ovd p95':>9}{'max hr':>7}{'sim s':>7}"
    )
    print("delays in minutes, measured over the day after a warm-up day; 5 % of changes silent")
    print(header)
    began = time.perf_counter()
    cells = [(n, budget) for n in args.tasks for budget in args.budgets]
    for (n, budget), rows in run(cells, args.seed).items():
        results[f"{n}/{budget}"] = rows
        for row in rows:
            cells_ = [
                (row.get("budget_used"), ".0%", 6),
                (row.get("change_mean_min"), ".2f", 9),
                (row.get("change_p95_min"), ".1f", 9),
                (row.get("silent_mean_min"), ".0f", 8),
                (row.get("silent_max_min"), ".0f", 9),
                (row.get("overdue_p95_min"), ".2f", 9),
                (row.get("max_hour_share"), ".2f", 7),
                (row.get("sim_seconds"), ".1f", 7),
            ]
            line = "".join(f"{fmt(value, spec):>{width}}" for value, spec, width in cells_)
            print(f"{n:>6} {budget:>6} {row['strategy']:<28}{line}")
        a, e = rows[0], rows[3]
        ratio = float(e["change_mean_min"]) / float(a["change_mean_min"])  # type: ignore[arg-type]
        print(f"{n:>6} {budget:>6} (e)/(a) mean status-change delay: {ratio:.4f}x")
    print(f"the whole table: {time.perf_counter() - began:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "detection_latency.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
