"""The planner's tasks, indexed so that a decision costs O(log N), not a scan
of every watched task (with 50,000 tasks and a request a second, the scan
was most of the service's CPU).

It answers what :func:`~notifier.watch.planner.scan` answers — the forced
polls due, the best regular ones, when the next task becomes pollable —
from heaps kept up to date as tasks change:

* forced polls by due time; those that fall due move to a heap ordered by
  (priority, due, id);
* regular tasks that may not be polled yet (min interval, back-off) by the
  moment they may;
* pollable regular tasks in one heap per *weight class*, ordered by last
  poll. Within a class the weights differ by under 10 %, so the order by
  ``elapsed × weight`` is the order by last poll; the best task is the best
  of the class heads. Entering or leaving a deadline window changes a task's
  weight: those moments are in a heap of their own.

Entries are never removed in place: a changed task gets a new version (its
moments keep theirs while they stay the same), and stale entries are skipped
when met (and swept when they outnumber the live).
Time only moves forward here; after a wall-clock step the poller rebuilds.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from .planner import _DEADLINE, Candidate, Due, current_weight, in_rotation

_E = TypeVar("_E", bound=tuple[Any, ...])  # a heap entry

CLASS_RATIO = 2 ** (1 / 8)  # neighbouring weight classes differ by 9 %
_LOG_RATIO = math.log(CLASS_RATIO)


STALE_SHARE = 4  # rebuilt once stale entries are 1/STALE_SHARE of the clean ones


def weight_class(weight: float) -> int:
    return round(math.log(max(weight, 1e-9)) / _LOG_RATIO)


def class_weight(cls: int) -> float:
    return float(CLASS_RATIO**cls)


@dataclass(slots=True)
class _Live:
    candidate: Candidate
    version: int  # of the candidate: entries for the class and waiting heaps
    moments: int  # of its moments (forced poll, window): kept while they stay the same
    pollable: bool = False  # in a class heap (else waiting, or not regular)
    cls: int = 0  # its class while pollable


def _moments(c: Candidate) -> tuple[int, float, float, float, bool]:
    return c.forced_priority, c.forced_due, c.window_from, c.window_to, c.regular


class PlanIndex:
    def __init__(self) -> None:
        self._live: dict[int, _Live] = {}
        self._version = 0
        self._now = -math.inf  # time processed so far
        self._forced: list[tuple[float, int, int, int]] = []  # (due, priority, moments, id)
        self._forced_due: list[tuple[int, float, int, int]] = []  # (priority, due, id, version)
        self._deadlines: list[tuple[float, int, int]] = []  # (due, moments, id), DEADLINE ones
        self._waiting: list[tuple[float, int, int]] = []  # (eligible at, version, id)
        self._windows: list[tuple[float, int, int]] = []  # (moment, moments, id)
        self._classes: dict[int, list[tuple[float, int, int]]] = {}  # cls → (last, id, version)
        self._entries = 0
        self._clean = 0  # entries after the last rebuild: all live then
        self._sweeping = False  # a rebuild is under way

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task_id: int) -> bool:
        return task_id in self._live

    def ids(self) -> set[int]:
        return set(self._live)

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    def candidate(self, task_id: int) -> Candidate | None:
        live = self._live.get(task_id)
        return live.candidate if live is not None else None

    def rotation(self, now: float) -> tuple[int, float]:
        """How many tasks are in the rotation now, and their weights' sum
        (O(N): for the operator)."""
        weights = [
            current_weight(live.candidate, now)
            for live in self._live.values()
            if in_rotation(live.candidate, now)
        ]
        return len(weights), sum(weights)

    # --- keeping it current -------------------------------------------------------------

    def update(self, candidate: Candidate) -> None:
        """A task's candidate, new or changed."""
        self._version += 1
        version, task_id = self._version, candidate.task_id
        old = self._live.get(task_id)
        # A poll changes the task's last poll, seldom its moments: their
        # entries stand as they are (pushed anew on every poll, they piled
        # up faster than the stale ones surfaced).
        same = old is not None and _moments(old.candidate) == _moments(candidate)
        moments = old.moments if old is not None and same else version
        live = self._live[task_id] = _Live(candidate, version, moments)
        if candidate.forced_priority >= 0:
            if candidate.forced_due <= self._now:
                self._push(
                    self._forced_due,
                    (candidate.forced_priority, candidate.forced_due, task_id, version),
                )
            elif not same:
                self._push(
                    self._forced,
                    (candidate.forced_due, candidate.forced_priority, moments, task_id),
                )
                if candidate.forced_priority == _DEADLINE:
                    self._push(self._deadlines, (candidate.forced_due, moments, task_id))
        if candidate.regular:
            if not same:
                # The weight changes as the window opens, and just after it closes.
                for moment in (
                    candidate.window_from,
                    math.nextafter(candidate.window_to, math.inf),
                ):
                    if moment > self._now and math.isfinite(moment):
                        self._push(self._windows, (moment, moments, task_id))
            if candidate.eligible_at > self._now:
                self._push(self._waiting, (candidate.eligible_at, version, task_id))
            elif not self._forced_now(live):
                self._file(live)
        if not self._sweeping and self._entries > self._clean + self._clean // STALE_SHARE + 256:
            self._rebuild()

    def remove(self, task_id: int) -> None:
        self._live.pop(task_id, None)

    def _push(self, heap: list[_E], entry: _E) -> None:
        heapq.heappush(heap, entry)
        self._entries += 1

    def _pop(self, heap: list[_E]) -> _E:
        self._entries -= 1
        return heapq.heappop(heap)

    def _valid(self, version: int, task_id: int) -> _Live | None:
        live = self._live.get(task_id)
        return live if live is not None and live.version == version else None

    def _valid_moment(self, moments: int, task_id: int) -> _Live | None:
        live = self._live.get(task_id)
        return live if live is not None and live.moments == moments else None

    def _file(self, live: _Live) -> None:
        """Into the class heap for its weight at the time processed."""
        c = live.candidate
        in_window = math.isfinite(self._now) and c.window_from <= self._now <= c.window_to
        live.pollable, live.cls = True, weight_class(c.window_weight if in_window else c.weight)
        heap = self._classes.setdefault(live.cls, [])
        self._push(heap, (c.last_poll_at, c.task_id, live.version))

    def _rebuild(self) -> None:
        """Afresh, without stale entries: once they are a quarter as many as
        the live (memory stays within 1.25 × the index's clean size; at 50,000
        tasks a rebuild takes ~0.1 s, a few dozen times a day)."""
        candidates = [live.candidate for live in self._live.values()]
        now = self._now
        self.clear()
        self._now, self._sweeping = now, True
        try:
            for candidate in candidates:
                self.update(candidate)
        finally:
            self._sweeping = False
            self._clean = self._entries

    def advance(self, now: float) -> None:
        """Process the moments up to ``now``: forced polls falling due, tasks
        becoming pollable, deadline windows opening and closing."""
        if now < self._now:
            return  # never back: a wall-clock step rebuilds the index instead
        self._now = now
        while self._forced and self._forced[0][0] <= now:
            due, priority, moments, task_id = self._pop(self._forced)
            live = self._valid_moment(moments, task_id)
            if live is not None:
                self._push(self._forced_due, (priority, due, task_id, live.version))
                # Out of the rotation until polled: else 50,000 tasks awaiting
                # their baselines sit atop the class heaps, walked every time.
                live.pollable = False
        while self._deadlines and self._deadlines[0][0] <= now:
            self._pop(self._deadlines)
        while self._waiting and self._waiting[0][0] <= now:
            _, version, task_id = self._pop(self._waiting)
            live = self._valid(version, task_id)
            if live is not None and not self._forced_now(live):
                self._file(live)
        while self._windows and self._windows[0][0] <= now:
            _, moments, task_id = self._pop(self._windows)
            live = self._valid_moment(moments, task_id)
            if live is not None and live.pollable:
                self._file(live)  # its weight changed: a new entry in its new class
        # (after its window closes a task's weight drops back: window_to is a moment too)

    # --- deciding -----------------------------------------------------------------------

    def due(self, now: float, room: int) -> Due:
        """What :func:`~notifier.watch.planner.scan` answers, in O(room · log N)."""
        self.advance(now)
        forced = [(priority, due, task_id) for priority, due, task_id, _ in self._forced_best(room)]
        best = partial(self._best_regular, now, room)
        return Due(forced, best, self._next_due(), self._next_deadline())

    def _forced_now(self, live: _Live) -> bool:
        c = live.candidate
        return c.forced_priority >= 0 and c.forced_due <= self._now

    def _next_due(self) -> float:
        forced, waiting = self._forced, self._waiting
        while forced and self._valid_moment(forced[0][2], forced[0][3]) is None:
            self._pop(forced)
        while waiting and self._valid(waiting[0][1], waiting[0][2]) is None:
            self._pop(waiting)
        return min(forced[0][0] if forced else math.inf, waiting[0][0] if waiting else math.inf)

    def _next_deadline(self) -> float:
        heap = self._deadlines
        while heap and self._valid_moment(heap[0][1], heap[0][2]) is None:
            self._pop(heap)
        return heap[0][0] if heap else math.inf

    def _best_regular(self, now: float, room: int) -> list[int]:
        """The ``room`` best pollable tasks by (last − now) × class weight,
        then id; heads of each class first, then their heap children. (The
        service's hottest loop: written for speed, helpers inlined.)"""
        classes, lives = self._classes, self._live
        push, pop = heapq.heappush, heapq.heappop
        frontier: list[tuple[float, int, int, int, float]] = []  # key, id, cls, index, weight
        for cls, heap in classes.items():
            # Stale entries hold older polls than their tasks' current ones, so
            # they gather at the top: drop them there, where they cost most.
            while heap and not self._current(cls, heap[0]):
                self._pop(heap)
            if heap:
                w = class_weight(cls)
                last, task_id, _ = heap[0]
                frontier.append(((last - now) * w, task_id, cls, 0, w))
        heapq.heapify(frontier)
        chosen: list[int] = []
        taken: set[int] = set()  # a task refiled into its old class is there twice
        while frontier and len(chosen) < room:
            _, task_id, cls, index, w = pop(frontier)
            heap = classes[cls]
            live = lives.get(task_id)
            if (
                live is not None
                and live.version == heap[index][2]
                and live.pollable
                and live.cls == cls
                and task_id not in taken
            ):
                chosen.append(task_id)
                taken.add(task_id)
            size = len(heap)
            for child in (2 * index + 1, 2 * index + 2):
                if child < size:
                    last, child_id, _ = heap[child]
                    push(frontier, ((last - now) * w, child_id, cls, child, w))
        return chosen

    def _current(self, cls: int, entry: tuple[float, int, int]) -> _Live | None:
        """The task of a class-heap entry, while the entry still stands for it."""
        live = self._valid(entry[2], entry[1])
        return live if live is not None and live.pollable and live.cls == cls else None

    def _forced_best(self, room: int) -> Iterator[tuple[int, float, int, int]]:
        """The ``room`` first valid forced polls due, without popping."""
        heap = self._forced_due
        while heap and self._valid(heap[0][3], heap[0][2]) is None:  # stale ones gather on top
            self._pop(heap)
        frontier = [(heap[0], 0)] if heap else []
        found = 0
        while frontier and found < room:
            entry, index = heapq.heappop(frontier)
            if self._valid(entry[3], entry[2]) is not None:
                found += 1
                yield entry
            for child in (2 * index + 1, 2 * index + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
