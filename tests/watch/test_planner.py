"""The planner: unit cases, and properties over any workload (hypothesis)."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.watch.planner import (
    DAY_S,
    Budget,
    Candidate,
    PlannerSettings,
    TaskView,
    learn,
    next_poll,
    plan,
    polls_per_day_estimate,
    rate_per_day,
)

NOW = 1_000_000.0
SETTINGS = PlannerSettings()


def budget(remaining: int = 5000, last: float | None = None, **kw: object) -> Budget:
    values: dict[str, object] = {
        "remaining": remaining,
        "resets_at": NOW + DAY_S,
        "daily": 5000,
        "last_request_at": last,
    }
    values.update(kw)
    return Budget(**values)  # type: ignore[arg-type]


def polled(task_id: int, ago: float, **kw: object) -> TaskView:
    return TaskView(task_id=task_id, last_poll_at=NOW - ago, **kw)  # type: ignore[arg-type]


def test_never_polled_tasks_go_first() -> None:
    tasks = [polled(1, 3000), TaskView(2), polled(3, 5000)]
    decision = plan(tasks, budget(), NOW, SETTINGS)
    assert decision.poll == (2,) and decision.reason == "baseline"


def test_the_largest_elapsed_times_root_rate_goes_next() -> None:
    tasks = [polled(1, 1000, rate_per_day=0.1), polled(2, 600, rate_per_day=4.0)]
    # 1000 * sqrt(0.1) = 316 < 600 * sqrt(4) = 1200
    assert plan(tasks, budget(), NOW, SETTINGS).poll == (2,)


def test_nothing_when_the_budget_is_spent() -> None:
    decision = plan([TaskView(1)], budget(remaining=0), NOW, SETTINGS)
    assert decision.poll == () and decision.reason == "budget"
    assert decision.wake_at == NOW + DAY_S


def test_requests_are_spread_over_the_rest_of_the_day() -> None:
    tasks = [polled(i, 3600) for i in range(10)]
    decision = plan(tasks, budget(remaining=240, last=NOW - 1), NOW, SETTINGS)
    # 240 requests over 24 h: one every 360 s (the pace cap, 5000×1.5/day, is looser)
    assert decision.poll == () and math.isclose(decision.wake_at, NOW - 1 + 360)


def test_pace_is_capped_at_one_and_a_half_times_the_average() -> None:
    tasks = [polled(i, 3600) for i in range(10)]
    b = budget(remaining=5000, last=NOW - 1, resets_at=NOW + 3600)  # a whole day's budget, 1 h left
    decision = plan(tasks, b, NOW, SETTINGS)
    assert math.isclose(decision.wake_at, NOW - 1 + DAY_S / (1.5 * 5000))


def test_min_interval_is_honoured() -> None:
    tasks = [polled(1, 30), polled(2, 59)]
    decision = plan(tasks, budget(), NOW, SETTINGS)
    assert decision.poll == ()
    assert math.isclose(decision.wake_at, NOW + 1)  # task 2 may be polled in 1 s


def test_deadline_poll_comes_right_after_end_time_and_pulls_forward() -> None:
    deadline = NOW - 20  # passed 20 s ago; the margin is 15 s
    tasks = [polled(1, 3600, deadline=deadline, close_seen=True), polled(2, 9000)]
    decision = plan(tasks, budget(last=NOW - 2), NOW, SETTINGS)  # regular slot not yet due
    assert decision.poll == (1,) and decision.reason == "deadline"


def test_with_get_multi_a_deadline_poll_waits_for_others_before_pulling_forward() -> None:
    """A request per flip spent a 50,000-task day's budget by noon (bench
    detection_latency): with getMulti the flips due meanwhile share one."""
    multi = replace(SETTINGS, batch_size=100)
    flips = [polled(i, 3600, deadline=NOW - 20 + i, close_seen=True) for i in (1, 2, 3)]
    slow = budget(remaining=240, last=NOW - 2)  # the next regular request in 358 s
    early = plan(flips, slow, NOW, multi)  # the first flip (deadline + 15 s) due 4 s ago
    assert early.poll == ()
    assert math.isclose(early.wake_at, NOW - 4 + multi.deadline_gather_s)
    later = plan(flips, slow, early.wake_at, multi)
    assert later.poll[:3] == (1, 2, 3) and later.reason == "deadline"


def test_deadlines_beyond_the_budget_leave_no_hour_of_the_day_unwatched() -> None:
    """Pulled-forward polls are capped by the pace of what is left, not of the
    whole day: more deadlines than requests spread over every hour."""
    tasks = [
        TaskView(i, last_poll_at=-1.0, deadline=i * 72.0, close_seen=True) for i in range(1200)
    ]  # a flip every 72 s; 400 requests for 1,200 of them
    sent, _, _ = simulate_views(tasks, daily=400, batch=1)
    hours = [0] * 24
    for t in sent:
        hours[min(23, int(t // 3600))] += 1
    assert min(hours) > 0, hours
    assert len(sent) <= 400


def test_wakes_for_the_next_deadline() -> None:
    tasks = [polled(1, 100, deadline=NOW + 500, close_seen=True)]
    decision = plan(tasks, budget(remaining=100, last=NOW - 1), NOW, SETTINGS)
    assert math.isclose(decision.wake_at, NOW + 500 + SETTINGS.deadline_margin_s)


def test_a_task_entering_the_window_is_polled_then() -> None:
    start = NOW - 20 + SETTINGS.deadline_window_s  # the deadline; its window began 20 s ago
    tasks = [polled(1, 3600, deadline=start), polled(2, 9000)]
    decision = plan(tasks, budget(last=NOW - 2), NOW, SETTINGS)
    assert decision.poll == (1,) and decision.reason == "deadline"


def test_an_overdue_task_is_not_forced_again() -> None:
    tasks = [polled(1, 100, deadline=NOW - 1000, overdue_seen=True)]
    assert plan(tasks, budget(last=NOW - 2), NOW, SETTINGS).poll == ()


def test_finished_tasks_are_rechecked_rarely_and_weigh_less() -> None:
    finished = polled(1, 3000, finished=True, rate_per_day=1.0)
    active = polled(2, 2000, rate_per_day=1.0)
    assert plan([finished, active], budget(), NOW, SETTINGS).poll == (2,)
    overdue_recheck = replace(finished, last_poll_at=NOW - SETTINGS.finished_interval_s - 1)
    decision = plan([overdue_recheck, polled(3, 50_000, rate_per_day=9)], budget(), NOW, SETTINGS)
    assert decision.poll == (1,) and decision.reason == "recheck"


def test_unavailable_tasks_only_on_their_slow_interval() -> None:
    gone = polled(1, 3600, unavailable=True)
    assert plan([gone], budget(), NOW, SETTINGS).poll == ()
    due = replace(gone, last_poll_at=NOW - SETTINGS.unavailable_interval_s)
    assert plan([due], budget(), NOW, SETTINGS).poll == (1,)


def test_failing_tasks_back_off() -> None:
    failing = polled(1, 20, failures=3)  # back-off 10 s × 2² = 40 s
    decision = plan([failing], budget(), NOW, replace(SETTINGS, min_interval_s=1))
    assert decision.poll == () and math.isclose(decision.wake_at, NOW + 20)
    assert plan(
        [replace(failing, failures=1)], budget(), NOW, replace(SETTINGS, min_interval_s=1)
    ).poll == (1,)


def test_a_batch_is_filled_up_to_its_size() -> None:
    tasks = [polled(i, 100 + i) for i in range(250)]
    decision = plan(tasks, budget(), NOW, replace(SETTINGS, batch_size=100))
    assert len(decision.poll) == 100
    assert set(decision.poll) == set(range(150, 250))  # the longest unpolled


def test_learning_moves_the_rate_towards_what_polls_find() -> None:
    hot, cold = (0.0, 0.0), (0.0, 0.0)
    for _ in range(24):
        hot = learn(*hot, changed=True, elapsed_s=3600)
        cold = learn(*cold, changed=False, elapsed_s=3600)
    assert rate_per_day(*hot) > 15 and rate_per_day(*cold) < 0.2
    assert math.isclose(rate_per_day(0.0, 0.0), 0.5)


def test_poll_estimate_follows_the_weights() -> None:
    tasks = [polled(1, 0, rate_per_day=4.0), polled(2, 0, rate_per_day=1.0)]
    estimate = polls_per_day_estimate(tasks, 300, SETTINGS, NOW)
    assert math.isclose(estimate[1], 200) and math.isclose(estimate[2], 100)


# --- properties over any workload ---------------------------------------------------------

workloads = st.lists(
    st.tuples(
        st.floats(0.01, 20),  # change rate per day
        st.one_of(st.none(), st.floats(0, DAY_S)),  # deadline, seconds into the day
        st.booleans(),  # finished
    ),
    min_size=1,
    max_size=60,
)


def simulate(
    workload: list[tuple[float, float | None, bool]], daily: int, batch: int
) -> tuple[list[float], dict[int, list[float]], list[TaskView]]:
    """Drive the planner through one day; return request times and each task's polls."""
    start = 0.0
    tasks = [
        TaskView(i, last_poll_at=start - 1, deadline=None if d is None else start + d,
                 finished=f, rate_per_day=r)
        for i, (r, d, f) in enumerate(workload)
    ]  # fmt: skip
    return simulate_views(tasks, daily, batch)


def simulate_views(
    tasks: list[TaskView], daily: int, batch: int
) -> tuple[list[float], dict[int, list[float]], list[TaskView]]:
    """Tasks numbered 0…n-1, the day from 0 to DAY_S."""
    config = replace(SETTINGS, batch_size=batch)
    start = 0.0
    sent: list[float] = []
    polls: dict[int, list[float]] = {t.task_id: [] for t in tasks}
    now, end = start, start + DAY_S
    while now < end:
        recent = sum(1 for s in sent if s > now - 3600)
        b = Budget(daily - len(sent), end, daily, sent[-1] if sent else None, recent)
        decision = plan(tasks, b, now, config)
        if not decision.poll:
            assert decision.wake_at > now
            now = decision.wake_at
            continue
        assert len(decision.poll) <= batch
        sent.append(now)
        for task_id in decision.poll:
            view = tasks[task_id]
            polls[task_id].append(now)
            tasks[task_id] = replace(
                view,
                last_poll_at=now,
                overdue_seen=view.deadline is not None and now >= view.deadline,
                close_seen=view.deadline is not None and now >= view.deadline - DAY_S,
            )
    return sent, polls, tasks


@settings(max_examples=40, deadline=None)
@given(workload=workloads, daily=st.integers(1, 3000), batch=st.sampled_from([1, 100]))
def test_never_exceeds_the_budget_nor_the_rate(
    workload: list[tuple[float, float | None, bool]], daily: int, batch: int
) -> None:
    sent, polls, _ = simulate(workload, daily, batch)
    assert len(sent) <= daily
    assert all(b - a >= 1.0 - 1e-9 for a, b in pairwise(sent))
    for times in polls.values():  # min_interval per task
        assert all(b - a >= SETTINGS.min_interval_s - 1e-9 for a, b in pairwise(times))


@settings(max_examples=40, deadline=None)
@given(workload=workloads, batch=st.sampled_from([1, 100]))
def test_every_deadline_gets_its_poll_when_the_budget_allows(
    workload: list[tuple[float, float | None, bool]], batch: int
) -> None:
    daily = 3000  # at least 2 forced polls per task fit, with room to spare
    _, polls, _ = simulate(workload, daily, batch)
    for task_id, (_, deadline, finished) in enumerate(workload):
        if deadline is None or finished or deadline + SETTINGS.deadline_margin_s >= DAY_S - 120:
            continue
        # The simulation shows isOverdued from the deadline on, so the first
        # poll from then sees the flip (a regular one may come before the
        # planner's forced poll at deadline + margin).
        flip = deadline + SETTINGS.deadline_margin_s
        after = [t for t in polls[task_id] if t >= deadline]
        assert after, f"task {task_id}: no poll after its deadline"
        assert after[0] - flip <= 120, f"task {task_id}: deadline poll {after[0] - flip:.0f} s late"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 200), seed=st.integers(0, 1000))
def test_spends_the_budget_evenly(n: int, seed: int) -> None:
    rng = random.Random(seed)
    workload = [
        (rng.uniform(0.05, 8), rng.choice([None, rng.uniform(0, DAY_S)]), False) for _ in range(n)
    ]
    daily = 1200
    sent, _, _ = simulate(workload, daily, batch=1)
    assert len(sent) >= 0.95 * daily
    hours = [0] * 24
    for t in sent:
        hours[min(23, int(t // 3600))] += 1
    assert max(hours) <= 2 * daily / 24


# --- the next planned poll, as the operator sees it ----------------------------------------


def when(view: TaskView, cycle_s: float = 600.0) -> tuple[float, str]:
    at, why = next_poll(Candidate.of(view, SETTINGS), NOW, cycle_s)
    return at - NOW, why


def test_next_poll_in_the_rotation_follows_the_weight() -> None:
    assert when(polled(1, ago=10)) == (590.0, "rotation")  # weight 1: once a cycle
    busy = polled(2, ago=10, rate_per_day=4.0)  # weight sqrt(4) = 2: twice as often
    assert when(busy) == (290.0, "rotation")
    assert when(polled(3, ago=1000)) == (0.0, "rotation")  # overdue for its turn: now


def test_a_far_deadline_does_not_hide_the_rotation() -> None:
    """A deadline in 30 days forces a poll when its window opens, in 29 days;
    the rotation comes long before that."""
    far = polled(1, ago=10, deadline=NOW + 30 * DAY_S)
    assert when(far) == (590.0, "rotation")


def test_a_near_deadline_comes_first_when_it_is_sooner() -> None:
    near = polled(1, ago=10, deadline=NOW + 120, close_seen=True)  # flips in 2 minutes
    assert when(near) == (120 + SETTINGS.deadline_margin_s, "deadline")


def test_forced_polls_that_are_due_wait_for_nothing() -> None:
    assert when(TaskView(task_id=1)) == (0.0, "baseline")
    gone = polled(1, ago=60, unavailable=True)
    assert when(gone) == (SETTINGS.unavailable_interval_s - 60, "recheck")
    assert when(polled(1, ago=10), cycle_s=math.inf) == (math.inf, "rotation")
