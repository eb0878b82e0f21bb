"""Pushes: PlanFix's own scenarios say a task changed; we read it to see.

A push is never trusted. It only asks for a read of its task sooner than the
planner would have made it, and the alert, if any, comes from the diff of
that card as always. At most one read per task every ``min_interval_s``: a
burst of pushes for one task costs one request. The poller makes the reads
from the quota's on-demand reserve; once that is spent, pushed tasks ride in
the planner's next request instead (:meth:`PushInbox.hurry`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_PENDING = 10_000  # tasks and numbers waiting; beyond, a push is dropped (and counted)


@dataclass
class PushStats:
    received: int = 0  # accepted by the endpoint
    coalesced: int = 0  # for a task whose read was already coming
    dropped: int = 0  # beyond MAX_PENDING
    read: int = 0  # tasks read because of a push
    ignored: int = 0  # tasks in no watch set
    last_at: float | None = None
    waiting_for_planner: int = 0  # pushed tasks left to the planner: the reserve is spent


class PushInbox:
    """Tasks pushed, waiting for their verifying read."""

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.on_push: Callable[[], None] = lambda: None  # the service wakes the poller here
        self.stats = PushStats()
        self._due: dict[int, float] = {}  # task id → when its read may go
        self._numbers: set[int] = set()  # numbers people see, to resolve to ids first
        self._read_at: dict[int, float] = {}  # task id → its last read for a push
        self._hurry: set[int] = set()  # for the planner's next request

    def offer(self, *, task_id: int | None = None, number: int | None = None) -> bool:
        """A push for a task (by id, or by number); False when dropped."""
        if len(self._due) + len(self._numbers) >= MAX_PENDING:
            self.stats.dropped += 1
            return False
        self.stats.received += 1
        self.stats.last_at = self.clock()
        if task_id is not None:
            self.schedule(task_id)
        elif number is not None:
            self._numbers.add(number)
        self.on_push()
        return True

    def ask(self, task_id: int) -> None:
        """The operator asks for a read now (the status page's "poll now"): due
        at once, whenever the last read was; not counted as a push."""
        self._due[task_id] = self.clock()
        self.on_push()

    def schedule(self, task_id: int) -> None:
        if task_id in self._due:
            self.stats.coalesced += 1
            return
        last = self._read_at.get(task_id, -math.inf)
        self._due[task_id] = max(self.clock(), last + self.min_interval_s)

    def numbers(self) -> list[int]:
        """The numbers pushed since the last call, to be resolved."""
        numbers, self._numbers = sorted(self._numbers), set()
        return numbers

    def renumber(self, numbers: list[int]) -> None:
        """Numbers not resolved this time: again next time."""
        self._numbers.update(numbers)

    def take(self, now: float, limit: int) -> list[int]:
        """Up to ``limit`` tasks whose read is due, marked read."""
        ready = [task_id for task_id, at in self._due.items() if at <= now][:limit]
        for task_id in ready:
            del self._due[task_id]
            self._read_at[task_id] = now
        if len(self._read_at) > MAX_PENDING:  # only the recent ones still matter
            cutoff = now - self.min_interval_s
            self._read_at = {t: at for t, at in self._read_at.items() if at > cutoff}
        return ready

    def next_at(self) -> float:
        """When a read is next due (now, while numbers wait to be resolved)."""
        if self._numbers:
            return self.clock()
        return min(self._due.values(), default=math.inf)

    def hurry(self, task_ids: list[int]) -> None:
        """The reserve is spent: these go with the planner's next request."""
        self._hurry.update(task_ids)
        self.stats.waiting_for_planner = len(self._hurry)

    def hurried(self, room: int) -> list[int]:
        """Up to ``room`` of the tasks left to the planner, taken."""
        taken = sorted(self._hurry)[:room]
        self._hurry.difference_update(taken)
        self.stats.waiting_for_planner = len(self._hurry)
        return taken
