"""The change feed: what changed, account-wide, since the last look.

Every ``interval_s`` the poller asks PlanFix once (a page more for every
hundred changed tasks) for the tasks whose last change is after its last
look, less an overlap: PlanFix's dates have minute precision. ``task.getList``
hands back the cards themselves; where the server has only the action log,
the log names the tasks and the poller reads their cards. A feed only says
which tasks to read: an alert always comes from the diff of a card, so a
card seen twice (the overlap) changes nothing the second time.

Where the server offers neither method (0008, 0020) the feed steps down,
says so once, and the poller plans every task on its own, as before; each
start and reload probes afresh. The cursor is kept in the store, and moves
only once what a look found has been read: after a restart the first look
covers the time the service was down (up to a day).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from ..ops import logging as oplog
from ..planfix.client import PlanfixClient
from ..planfix.errors import UNSUPPORTED_CODES, PlanfixApiError
from ..planfix.feeds import PAGE_SIZE, TaskQuery
from ..planfix.model import Task
from ..store import Store

log = oplog.get(__name__)

OVERLAP_S = 120.0
MAX_LOOKBACK_S = 86400.0  # a look after a long pause reaches back a day, no further
SWEEP_S = 3600.0  # every hour a look also reads the overdue tasks (flips no feed may show)
PAGES_PER_ROUND = 20  # a bigger look goes on in the next round (a round stays ~20 s)
MOST_SHARE = 0.5  # the looks take at most this share of what is left of the day


class FeedMode(enum.Enum):
    CARDS = "task.getList"  # the changed tasks' cards, by last-change date
    ACTIONS = "action.getListByPeriod"  # the action log: which tasks changed
    NONE = "none"  # the server has neither: every task on its own plan


_NEXT = {FeedMode.CARDS: FeedMode.ACTIONS, FeedMode.ACTIONS: FeedMode.NONE}
T = TypeVar("T")


async def every_page(
    read: Callable[[int], Awaitable[T]], total: Callable[[T], int], first: int = 1
) -> AsyncIterator[tuple[int, T, bool]]:
    """(page number, page, whether more follow) for pages ``first``, … of a
    list PlanFix serves 100 at a time, as many as its total needs (re-read on
    every page: the list may change)."""
    page, pages = first, first
    while page <= pages:
        result = await read(page)
        pages = math.ceil(total(result) / PAGE_SIZE)
        yield page, result, page < pages
        page += 1


@dataclass
class Look:
    """What one look found among the watched tasks. A look over many pages
    is read ``PAGES_PER_ROUND`` at a time, so that a poll round stays short;
    its cursor is committed once it is ``complete`` and what it found has
    been read (:meth:`ChangeFeed.commit`)."""

    started: float = 0.0
    cards: list[Task] = field(default_factory=list)  # read already
    to_read: set[int] = field(default_factory=set)  # named only, or unreadable: read them
    requests: int = 0
    complete: bool = True


@dataclass
class _Under:
    """A look under way: its window, and the page it goes on from."""

    started: float
    since: datetime
    until: datetime
    page: int = 1


class ChangeFeed:
    def __init__(
        self,
        client: PlanfixClient,
        store: Store,
        *,
        interval_s: float,
        overlap_s: float = OVERLAP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.store, self.clock = client, store, clock
        self.interval_s, self.overlap_s = interval_s, overlap_s
        # Probed afresh on every start (and reload): a method refused once
        # (0020, a right not granted yet) may be allowed now.
        self.mode = FeedMode.CARDS
        self.cursor: float | None = None  # the last look began (load() reads it)
        self.looked_at = -math.inf  # the last look began (in this run): the first is at once
        self.swept_at = -math.inf  # the last overdue sweep
        self._under: _Under | None = None  # a look not read to its last page yet
        self.pages_per_look = 1.0  # running means, for the budget they need
        self.pages_per_sweep = 1.0
        self.spacing_s = interval_s  # interval_s, or longer where the budget is short

    async def load(self) -> None:
        """Where the last run's looks got to."""
        cursor = await self.store.get_meta("feed.cursor")
        self.cursor = float(cursor) if cursor else None

    def reprobe(self) -> None:
        self.mode = FeedMode.CARDS

    @property
    def active(self) -> bool:
        return self.interval_s > 0 and self.mode is not FeedMode.NONE

    @property
    def next_at(self) -> float:
        if self._under is not None:  # a long look goes on at once
            return self.looked_at
        return self.looked_at + min(self.spacing_s, 86400.0)

    def due(self, now: float) -> bool:
        return self.active and now >= self.next_at

    def reserve(self, seconds_left: float, daily: int, left: int) -> int:
        """Requests the looks still need today, kept out of the planner's
        budget (so that deadline polls pulled forward cannot eat them): one
        look every ``interval_s``, or further apart where the looks would take
        more than half of the ``daily`` budget; never more than is ``left``."""
        if not self.active:
            return 0
        seconds_left = max(0.0, seconds_left)
        affordable = MOST_SHARE * daily / self.pages_per_look  # looks a day can pay for
        self.spacing_s = max(self.interval_s, 86400.0 / affordable if affordable else math.inf)
        if math.isinf(self.spacing_s):
            return 0
        looks = seconds_left / self.spacing_s * self.pages_per_look
        return min(left, math.ceil(looks + seconds_left / SWEEP_S * self.pages_per_sweep))

    def clock_stepped(self, step: float) -> None:
        if self.cursor is not None:
            self.cursor += min(step, 0.0)  # a wider window at worst, never a gap
        self.looked_at += step

    async def look(
        self, watched: Collection[int], joins: Callable[[Task], bool] | None = None
    ) -> Look:
        """Ask what changed since the last committed look (at most a day back:
        older changes are the safety net's); PlanfixError propagates."""
        now = self.looked_at = self.clock()
        if self._under is None:
            since_s = max(self.cursor or now, now - MAX_LOOKBACK_S) - self.overlap_s
            when = datetime.fromtimestamp
            self._under = _Under(now, when(since_s, UTC), when(now, UTC))
        under = self._under
        while self.active:
            try:
                if self.mode is FeedMode.CARDS:
                    found = await self._cards(under, watched, joins)
                    if found.complete and under.started >= self.swept_at + SWEEP_S:
                        await self._sweep(found, watched, under.started)
                        self.swept_at = under.started
                else:
                    found = await self._actions(under, watched)
            except PlanfixApiError as exc:
                if exc.code not in UNSUPPORTED_CODES:
                    raise
                await self._step_down(exc)
                under.page = 1
                continue
            found.started = under.started
            if found.complete:
                self._under = None
                self.pages_per_look += (under.page - 1 - self.pages_per_look) / 8
            return found
        self._under = None
        return Look(under.started)

    async def commit(self, look: Look) -> None:
        """What the look found is read: the next one starts from it."""
        self.cursor = look.started
        await self.store.set_meta("feed.cursor", repr(look.started))

    async def _step_down(self, exc: PlanfixApiError) -> None:
        old, self.mode = self.mode, _NEXT[self.mode]
        await self.store.set_meta("feed.mode", self.mode.value)  # for status
        if self.mode is FeedMode.NONE:
            log.warning(
                "PlanFix offers no change feed here; every task is polled on its own plan",
                error=exc.message,
            )
        else:
            log.info("change feed unavailable; trying the next", tried=old.value, error=exc.message)

    async def _cards(
        self, under: _Under, watched: Collection[int], joins: Callable[[Task], bool] | None
    ) -> Look:
        """The changed cards of watched tasks, and of tasks that ``joins`` a
        watched set (a new task in a watched project)."""
        found, query = Look(), TaskQuery(changed_since=under.since)
        read = partial(self.client.list_tasks, query)
        async for page, result, more in every_page(read, lambda r: r.total, under.page):
            found.requests += 1
            found.cards += [
                task for task in result.tasks if task.id in watched or (joins and joins(task))
            ]
            found.to_read |= {task_id for task_id in result.unreadable if task_id in watched}
            under.page, found.complete = page + 1, not more
            if found.requests >= PAGES_PER_ROUND:
                break
        return found

    async def _sweep(self, found: Look, watched: Collection[int], now: float) -> None:
        """The watched tasks that PlanFix calls overdue and whose deadline
        passed since the last sweep (the first one after a start: in the last
        two hours; the account's older overdue tasks would cost a page per
        hundred, and the planner polls every deadline it knows of anyway): a
        flip moves no last-change date, so far as anyone knows, and a
        deadline changed in silent mode leaves the planner's poll at the old
        time."""
        since = max(self.swept_at, now - 2 * SWEEP_S) - self.overlap_s
        window = (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(now, UTC))
        query, requests = TaskQuery(deadline_between=window, active=True, overdue=True), 0
        read = partial(self.client.list_tasks, query)
        async for _, result, _ in every_page(read, lambda r: r.total):
            requests += 1
            known = {card.id for card in found.cards}
            found.cards += [t for t in result.tasks if t.id in watched and t.id not in known]
        found.requests += requests
        self.pages_per_sweep += (requests - self.pages_per_sweep) / 4

    async def _actions(self, under: _Under, watched: Collection[int]) -> Look:
        found = Look()
        read = partial(self.client.list_actions, under.since, under.until)
        async for page, (actions, _), more in every_page(read, lambda r: r[1], under.page):
            found.requests += 1
            found.to_read |= {a.task_id for a in actions if a.task_id in watched}
            under.page, found.complete = page + 1, not more
            if found.requests >= PAGES_PER_ROUND:
                break
        return found
