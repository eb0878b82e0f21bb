"""The planner: which tasks to ask PlanFix about next, and when. Pure: it
takes the tasks' states, the budget and ``now`` (epoch seconds) and returns a
decision; it performs no I/O and never sleeps.

How it spends the daily budget:

* Requests are spread evenly over what is left of the quota day (the pace is
  recomputed from the budget left, so nothing is thrown away), never faster
  than ``requests_per_second`` and never more than ``max_pace`` times the
  day's average.
* Each request asks about the tasks with the largest ``elapsed × √rate``: in
  steady state that polls each task in proportion to the square root of its
  change rate, the allocation that minimises the mean detection delay for a
  fixed budget. Rates are learned from what polls find; a floor keeps every
  task in the rotation.
* A deadline is known in advance: each unfinished task is polled right after
  its ``endTime`` (to catch ``isOverdued``) and right after it enters the
  close-to-deadline window; those polls go first and may pull a request
  forward, within an hourly cap relative to the pace of what is left (so that
  they never starve the rest of the day). Inside the window a task weighs more.
* Finished tasks weigh less, and are re-checked at least every
  ``finished_interval_s``; unavailable ones only on that slow interval;
  failing tasks back off exponentially; tasks never polled go first (baseline).
* With ``task.getMulti`` one request carries up to ``batch_size`` tasks, and
  it is filled: the extra tasks cost nothing.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

DAY_S = 86400.0
HOUR_S = 3600.0
NEVER = -math.inf  # one object for every task without a deadline (50,000 floats less)


@dataclass(frozen=True, slots=True)
class TaskView:
    """What the planner knows of one watched task."""

    task_id: int
    last_poll_at: float | None = None  # the last attempt, whatever its result
    deadline: float | None = None  # when isOverdued flips (endTime, or the end of its day)
    overdue_seen: bool = False  # the last snapshot already says overdue
    close_seen: bool = False
    finished: bool = False
    unavailable: bool = False
    failures: int = 0  # consecutive failed polls
    rate_per_day: float = 1.0  # learned change rate


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    min_interval_s: float = 60.0
    deadline_window_s: float = DAY_S  # close-to-deadline window before endTime
    deadline_margin_s: float = 15.0  # poll this long after the flip moment
    # With getMulti, a deadline poll waits up to this long for the next regular
    # request (and the flips falling due meanwhile) before it pulls one forward:
    # pulled forward at once, 50,000 watched tasks spent the day's budget on a
    # request per flip by noon.
    deadline_gather_s: float = 30.0
    window_boost: float = 1.25  # weight multiplier inside the window
    finished_weight: float = 0.5  # finished tasks rarely reopen
    finished_interval_s: float = 6 * HOUR_S
    unavailable_interval_s: float = 6 * HOUR_S
    backoff_base_s: float = 10.0  # a failing task waits 10 s, 20 s, 40 s… up to backoff_max_s
    backoff_max_s: float = HOUR_S
    rate_floor_per_day: float = 0.1
    requests_per_second: float = 1.0
    max_pace: float = 1.5  # regular requests at most this × the day's average rate
    max_hour_share: float = 2.0  # with pulled-forward ones, no hour over this × the pace
    batch_size: int = 1  # 100 where the server has task.getMulti


@dataclass(frozen=True, slots=True)
class Budget:
    remaining: int  # requests left before the reset: the pace spreads these
    resets_at: float
    daily: int  # the day's whole plannable budget, for the pace caps
    last_request_at: float | None = None
    requests_last_hour: int = 0
    available: int | None = None  # may be sent now (less the reserve held); None = remaining


@dataclass(frozen=True, slots=True)
class Decision:
    poll: tuple[int, ...]  # ask about these now, in one request
    wake_at: float  # else (and after) come back no later than this
    reason: str  # deadline | baseline | recheck | regular | idle | budget


# Priority of the forced polls; lower goes first.
_DEADLINE, _BASELINE, _RECHECK = 0, 1, 2
_REASONS = {_DEADLINE: "deadline", _BASELINE: "baseline", _RECHECK: "recheck"}


def backoff_until(task: TaskView, settings: PlannerSettings) -> float:
    if task.last_poll_at is None:
        return -math.inf
    earliest = task.last_poll_at + settings.min_interval_s
    if task.failures:
        delay = settings.backoff_base_s * 2 ** min(task.failures - 1, 20)
        earliest = max(earliest, task.last_poll_at + min(delay, settings.backoff_max_s))
    return earliest


def forced_at(task: TaskView, settings: PlannerSettings) -> tuple[int, float] | None:
    """(priority, time) of the poll this task must get regardless of score."""
    last = task.last_poll_at
    if last is None:
        return _BASELINE, -math.inf
    eligible = backoff_until(task, settings)
    if task.unavailable:
        return _RECHECK, max(last + settings.unavailable_interval_s, eligible)
    if task.finished:
        return _RECHECK, max(last + settings.finished_interval_s, eligible)
    if task.deadline is None or task.overdue_seen:
        return None
    flip = task.deadline + settings.deadline_margin_s
    window_start = task.deadline - settings.deadline_window_s + settings.deadline_margin_s
    if not task.close_seen and last < window_start:
        return _DEADLINE, max(window_start, eligible)
    if last < flip:
        return _DEADLINE, max(flip, eligible)
    return None


def weight(task: TaskView, now: float, settings: PlannerSettings) -> float:
    return current_weight(Candidate.of(task, settings), now)


def pace_gap(budget: Budget, now: float, settings: PlannerSettings) -> float:
    """Seconds between regular requests: the rest of the budget spread over the
    rest of the day, within the rate limit and the pace cap."""
    seconds_left = max(budget.resets_at - now, 1.0)
    even = seconds_left / budget.remaining
    floor = 1.0 / settings.requests_per_second
    cap = DAY_S / (settings.max_pace * max(budget.daily, 1))
    return max(even, floor, cap)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A TaskView with what does not depend on ``now`` worked out once (it
    changes only when the task is polled): plan() is called every request."""

    task_id: int
    last_poll_at: float
    forced_priority: int  # -1: no forced poll
    forced_due: float
    eligible_at: float
    weight: float  # outside the deadline window
    window_weight: float  # inside it
    window_from: float  # the window: [deadline - window, deadline]
    window_to: float
    regular: bool  # takes part in the rotation (unavailable tasks do not)

    @classmethod
    def of(cls, task: TaskView, settings: PlannerSettings) -> Candidate:
        must = forced_at(task, settings)
        if task.rate_per_day <= settings.rate_floor_per_day and not task.finished:
            # Most tasks: no change seen lately. One pair of floats for all of them.
            base, boost = _floor_weights(settings.rate_floor_per_day, settings.window_boost)
        else:
            base = math.sqrt(max(task.rate_per_day, settings.rate_floor_per_day))
            if task.finished:
                base *= settings.finished_weight
            boost = base if task.finished else base * settings.window_boost
        deadline = task.deadline if task.deadline is not None else NEVER
        return cls(
            task_id=task.task_id,
            last_poll_at=task.last_poll_at if task.last_poll_at is not None else -math.inf,
            forced_priority=must[0] if must else -1,
            forced_due=must[1] if must else math.inf,
            eligible_at=backoff_until(task, settings),
            weight=base,
            window_weight=boost,
            window_from=deadline - settings.deadline_window_s if deadline is not NEVER else NEVER,
            window_to=deadline,
            regular=not task.unavailable,
        )


def current_weight(c: Candidate, now: float) -> float:
    return c.window_weight if c.window_from <= now <= c.window_to else c.weight


def in_rotation(c: Candidate, now: float) -> bool:
    """Polled in turn by weight now: regular, and no forced poll due yet
    (a task whose forced poll is due waits for that instead)."""
    return c.regular and not (c.forced_priority >= 0 and c.forced_due <= now)


def next_poll(c: Candidate, now: float, cycle_s: float, *, each: bool = False) -> tuple[float, str]:
    """When ``c`` is next polled, roughly, and why (for the operator).

    In the rotation a task is polled once (now − last poll) × weight reaches a
    mark common to all, which comes round every ``cycle_s`` for weight 1: the
    weights of the rotation over the regular requests per second. With
    ``each``, every request takes every task (they fit in one batch): a turn
    is then ``cycle_s``, the gap between requests, whatever the weight. A
    forced poll (deadline, recheck) comes at its moment, or sooner by the rotation.
    """
    forced = max(c.forced_due, c.eligible_at, now), _REASONS.get(c.forced_priority, "")
    if not in_rotation(c, now):
        return forced if c.forced_priority >= 0 else (math.inf, "none")
    gap = cycle_s if each else cycle_s / current_weight(c, now)
    turn = max(c.last_poll_at + gap, c.eligible_at, now)
    return forced if c.forced_priority >= 0 and forced[0] <= turn else (turn, "rotation")


@functools.lru_cache(maxsize=8)
def _floor_weights(floor: float, window_boost: float) -> tuple[float, float]:
    return math.sqrt(floor), math.sqrt(floor) * window_boost


def plan(
    tasks: Sequence[TaskView], budget: Budget, now: float, settings: PlannerSettings
) -> Decision:
    return plan_candidates([Candidate.of(t, settings) for t in tasks], budget, now, settings)


def plan_candidates(
    tasks: Iterable[Candidate], budget: Budget, now: float, settings: PlannerSettings
) -> Decision:
    """The decision by a scan of every task: O(N). The service keeps a
    :class:`~notifier.watch.schedule.PlanIndex` instead, which decides the
    same in O(log N); this stays the plain statement of the rules."""
    return decide(budget, now, settings, lambda room: scan(tasks, now, room))


@dataclass(frozen=True, slots=True)
class Due:
    """What the tasks say at ``now``: the forced polls due (best first) and
    the regular ones by score (best first), ``room`` of each at most; when
    the next task becomes pollable, and the next deadline poll."""

    forced: list[tuple[int, float, int]]  # (priority, due at, task id)
    best_regular: Callable[[], list[int]]  # asked only when a request goes out
    next_due: float
    next_deadline: float

    @property
    def regular(self) -> list[int]:
        return self.best_regular()


def scan(tasks: Iterable[Candidate], now: float, room: int) -> Due:
    forced: list[tuple[int, float, int]] = []  # (priority, due at, task id), due now
    regular: list[tuple[float, int]] = []  # (-score, task id), eligible now
    next_deadline = math.inf  # the earliest deadline poll still ahead
    next_due = math.inf  # the earliest moment any task becomes pollable
    for task in tasks:
        priority = task.forced_priority
        if priority >= 0:
            due = task.forced_due
            if due <= now:
                forced.append((priority, due, task.task_id))
                continue
            if due < next_due:
                next_due = due
            if priority == _DEADLINE and due < next_deadline:
                next_deadline = due
        if not task.regular:
            continue
        if task.eligible_at > now:
            if task.eligible_at < next_due:
                next_due = task.eligible_at
            continue
        in_window = task.window_from <= now <= task.window_to
        w = task.window_weight if in_window else task.weight
        regular.append(((task.last_poll_at - now) * w, task.task_id))
    best = [task_id for _, task_id in heapq.nsmallest(room, regular)]
    return Due(
        heapq.nsmallest(room, forced),
        lambda: best,
        next_due,
        next_deadline,
    )


def decide(
    budget: Budget, now: float, settings: PlannerSettings, due_at: Callable[[int], Due]
) -> Decision:
    """The rules of spending, given what is due (``due_at(room)``)."""
    available = budget.remaining if budget.available is None else budget.available
    if budget.remaining <= 0 or available <= 0:
        return Decision((), budget.resets_at, "budget")
    last = budget.last_request_at
    not_before = now if last is None else max(now, last + 1.0 / settings.requests_per_second)
    if now < not_before:  # nothing can be sent yet, whatever the tasks say
        return Decision((), not_before, "idle")
    next_slot = now if last is None else last + pace_gap(budget, now, settings)
    # Pulled forward, no hour goes over max_hour_share × the pace of what is
    # left (not of the whole day: deadlines due faster than the budget allows
    # spent it all by noon and left the afternoon unwatched).
    hour_pace = budget.remaining * HOUR_S / max(budget.resets_at - now, HOUR_S)
    may_pull_forward = budget.requests_last_hour + 1 <= settings.max_hour_share * hour_pace
    due = due_at(settings.batch_size)
    forced = due.forced
    gather = settings.deadline_gather_s if settings.batch_size > 1 else 0.0
    deadline_due = bool(forced) and forced[0][0] == _DEADLINE
    gathered = deadline_due and now >= forced[0][1] + gather
    if now < next_slot and not (gathered and may_pull_forward):
        if may_pull_forward:
            pull_at = forced[0][1] + gather if deadline_due else due.next_deadline + gather
            if pull_at < next_slot:
                return Decision((), max(pull_at, not_before), "idle")
        return Decision((), next_slot, "idle")
    chosen = [task_id for _, _, task_id in forced[: settings.batch_size]]
    room = settings.batch_size - len(chosen)
    if room > 0:
        chosen.extend(due.regular[:room])
    if not chosen:  # nothing may be polled yet: sleep until something may
        wake = max(due.next_due, next_slot) if due.next_due < math.inf else now + HOUR_S
        return Decision((), wake, "idle")
    reason = _REASONS[forced[0][0]] if forced else "regular"
    return Decision(tuple(chosen), now, reason)


# --- learning change rates -------------------------------------------------------------

RATE_HALF_LIFE_S = 7 * DAY_S
PRIOR_CHANGES = 0.125  # as if an eighth of a change had been seen…
PRIOR_DAYS = 0.25  # …in six hours: new tasks start at 0.5 changes/day, and a
# day of watching already outweighs that guess


def learn(
    changes: float, observed_s: float, changed: bool, elapsed_s: float
) -> tuple[float, float]:
    """Fold one poll's finding into a task's decayed (changes, observed time)."""
    decay = 0.5 ** (max(elapsed_s, 0.0) / RATE_HALF_LIFE_S)
    folded = changes * decay + (1.0 if changed else 0.0)
    # (`or 0.0`: one zero for every task that has not changed, not a float each)
    return folded or 0.0, observed_s * decay + max(elapsed_s, 0.0)


def rate_per_day(changes: float, observed_s: float) -> float:
    return (changes + PRIOR_CHANGES) / (observed_s / DAY_S + PRIOR_DAYS)


def polls_per_day_estimate(
    tasks: Iterable[TaskView], budget_per_day: float, settings: PlannerSettings, now: float
) -> dict[int, float]:
    """Roughly how often each task is polled at the current pace (for /list)."""
    views = [t for t in tasks if not t.unavailable]
    weights = {t.task_id: weight(t, now, settings) for t in views}
    total = sum(weights.values()) or 1.0
    capacity = budget_per_day * settings.batch_size
    cap = DAY_S / settings.min_interval_s
    return {task_id: min(cap, capacity * w / total) for task_id, w in weights.items()}
