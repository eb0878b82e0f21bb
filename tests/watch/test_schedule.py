"""The planner's index decides as the plain scan does (weights on the index's
classes, so that the two orders are the same), however tasks change and
time passes; and a decision stays cheap with many tasks."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.watch.planner import Candidate, scan
from notifier.watch.schedule import PlanIndex, class_weight

NOW = 1_800_000_000.0


def candidate(rng: random.Random, task_id: int, now: float) -> Candidate:
    forced = rng.choice([-1, -1, 0, 1, 2])
    deadline = now + rng.uniform(-3600, 3 * 3600) if rng.random() < 0.5 else -math.inf
    base = rng.randint(-30, 40)
    return Candidate(
        task_id=task_id,
        last_poll_at=rng.choice([-math.inf, now - rng.uniform(0, 86400)]),
        forced_priority=forced,
        forced_due=-math.inf if forced == 1 else now + rng.uniform(-600, 3600),
        eligible_at=rng.choice([-math.inf, now + rng.uniform(-600, 1800)]),
        weight=class_weight(base),
        window_weight=class_weight(base + 5),
        window_from=deadline - 3600,
        window_to=deadline,
        regular=rng.random() < 0.9,
    )


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), size=st.integers(1, 120), room=st.sampled_from([1, 5, 100]))
def test_the_index_decides_as_the_scan_does(seed: int, size: int, room: int) -> None:
    rng = random.Random(seed)
    tasks = {i: candidate(rng, i, NOW) for i in range(1, size + 1)}
    index = PlanIndex()
    for task in tasks.values():
        index.update(task)
    now = NOW
    for _ in range(25):
        now += rng.choice([0.0, 1.0, 37.0, 600.0, 3600.0])
        for task_id in rng.sample(sorted(tasks), k=min(3, len(tasks))):
            if rng.random() < 0.1:
                del tasks[task_id]
                index.remove(task_id)
            else:
                tasks[task_id] = candidate(rng, task_id, now)
                index.update(tasks[task_id])
        expected, got = scan(tasks.values(), now, room), index.due(now, room)
        assert got.forced == expected.forced
        assert got.regular == expected.regular
        if not expected.forced:  # (next_due only matters when nothing forced is due)
            assert got.next_due == expected.next_due
        assert got.next_deadline == expected.next_deadline
