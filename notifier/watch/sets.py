"""Watch sets beyond plain ids, as people think of tasks.

- ``numbers``: people know a task by its number (the 418 in ``…/task/418``),
  the API by its id, and the two differ. Each number is resolved with one
  ``task.get``, once, and remembered in the store; the card read is the
  task's baseline.
- ``projects`` and ``filters`` (saved task filters): their members are read
  with ``task.getList`` every ``discover_interval_s`` (further apart when
  that would cost more than a tenth of the day's budget). The change feed
  adds a task that shows up in a watched project at once. A task that enters
  a set gets its baseline, with no alert; one that leaves it is no longer
  polled, with no alert either.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from ..ops import logging as oplog
from ..planfix.client import PlanfixClient
from ..planfix.errors import PlanfixError, is_task_gone
from ..planfix.feeds import TaskQuery
from ..planfix.model import Task
from ..store import Store

log = oplog.get(__name__)

NUMBERS = "config:numbers"  # the sets' sources in the store
MEMBERS = "config:sets"
DISCOVERY_SHARE = 0.1  # discovery takes at most this share of the day's budget

Cards = Callable[[list[Task]], object]  # cards read on the way: polls of their tasks


class WatchSets:
    def __init__(
        self,
        client: PlanfixClient,
        store: Store,
        *,
        numbers: Sequence[int] = (),
        projects: Sequence[int] = (),
        filters: Sequence[int] = (),
        discover_interval_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.store, self.clock = client, store, clock
        self.discover_interval_s = discover_interval_s
        self.configure(numbers, projects, filters)
        self._missing: set[int] = set()  # numbers PlanFix does not know, said once each
        self._pages = 0  # what the last discovery cost

    def configure(
        self, numbers: Sequence[int], projects: Sequence[int], filters: Sequence[int]
    ) -> None:
        self.numbers, self.filters = list(numbers), list(filters)
        self.config_projects = set(projects)
        self.projects_changed()
        self.pending = True  # numbers to resolve

    def projects_changed(self) -> None:
        """The config's projects and those chats watch (/watch project 12):
        read afresh at once."""
        self.projects = self.config_projects | set(self.store.subscribed_projects())
        self.discovered_at = -math.inf
        if not self.projects and not self.filters:  # no discovery will run to empty it
            self.store.set_watched(MEMBERS, [], self.clock())

    # --- numbers ------------------------------------------------------------------------

    async def refresh(self, take: Cards) -> None:
        """Resolve the numbers not yet known and write their set to the store.
        A PlanFix failure leaves the rest for the next round."""
        ids: list[int] = []
        for number in self.numbers:
            known = self.store.get_meta(f"number:{number}")
            if known is not None:
                ids.append(int(known))
                continue
            try:
                task = await self.client.get_task_by_number(number)
            except PlanfixError as exc:
                if not is_task_gone(exc):
                    self.store.set_watched(NUMBERS, ids, self.clock())
                    return  # asked again next round
                if number not in self._missing:
                    self._missing.add(number)
                    log.warning("watch.numbers: PlanFix has no task with this number",
                                number=number, error=exc.message)  # fmt: skip
                continue
            self.store.set_meta(f"number:{number}", str(task.id))
            ids.append(task.id)
            self.store.set_watched(NUMBERS, ids, self.clock())
            take([task])
        self.store.set_watched(NUMBERS, ids, self.clock())
        self.pending = False

    # --- projects and saved filters -----------------------------------------------------

    def discovery_due(self, now: float, daily_budget: int) -> bool:
        if not self.projects and not self.filters:
            return False
        affordable = max(1.0, DISCOVERY_SHARE * daily_budget)
        spacing = max(self.discover_interval_s, 86400.0 * self._pages / affordable)
        return now >= self.discovered_at + spacing

    async def discover(self, take: Cards, before_take: Callable[[], object]) -> None:
        """Read every watched project's and saved filter's members; the set
        becomes exactly them (``before_take`` then follows the store), and
        their cards are taken as polls. PlanfixError propagates: the set
        stays as it was, tried again next time."""
        self.discovered_at = self.clock()
        queries = [TaskQuery(project=p) for p in sorted(self.projects)]
        queries += [TaskQuery(target=str(f)) for f in self.filters]
        cards: list[Task] = []
        ids: set[int] = set()
        pages = 0
        for query in queries:
            page, last = 1, 1
            while page <= last:
                result = await self.client.list_tasks(query, page)
                pages += 1
                cards += result.tasks
                ids |= {t.id for t in result.tasks} | set(result.unreadable)
                last, page = math.ceil(result.total / 100), page + 1
        self._pages = pages
        self.store.set_watched(MEMBERS, sorted(ids), self.clock())
        before_take()
        take(cards)

    def joins(self, card: Task) -> bool:
        """A card the feed brought that belongs in a watched project."""
        return card.project is not None and card.project.id in self.projects

    def join(self, task_ids: Sequence[int]) -> None:
        for task_id in task_ids:
            self.store.add_watched(task_id, MEMBERS, self.clock())
