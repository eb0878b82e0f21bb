"""Watch sets beyond plain ids, as people think of tasks.

- ``numbers``: people know a task by its number (the 418 in ``…/task/418``),
  the API by its id, and the two differ. Each number is resolved with one
  ``task.get``, once, and remembered in the store; the card read is the
  task's baseline. A number PlanFix cannot be asked about now is tried again
  later, on its own; the others are watched meanwhile.
- ``projects`` and ``filters`` (saved task filters): their members are read
  with ``task.getList`` every ``discover_interval_s`` (further apart when
  that would cost more than a tenth of the day's budget). The change feed
  adds a task that shows up in a watched project at once. A task that enters
  a set gets a baseline, with no alert; one that seems to have left is read
  once more (a change that took it out is alerted) and, when it is missing
  from two discoveries running, is no longer polled, with no alert.

Which tasks enter and leave is the poller's to apply; this module reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from functools import partial

from ..ops import logging as oplog
from ..planfix.client import PlanfixClient
from ..planfix.errors import PlanfixError, is_task_gone
from ..planfix.feeds import TaskQuery
from ..planfix.model import Task
from ..store import Store
from .feed import every_page

log = oplog.get(__name__)

NUMBERS = "config:numbers"  # the sets' sources in the store
MEMBERS = "config:sets"
DISCOVERY_SHARE = 0.1  # discovery takes at most this share of the day's budget
NUMBER_RETRY_S = 300.0
NUMBER_NOT_ID = (
    "A task's number (the 418 in …/task/418) is not its id: list numbers in watch.numbers"
)


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
        self._missing: set[int] = set()  # numbers PlanFix does not know, said once each
        self._retry_at: dict[int, float] = {}  # numbers to ask again, and when
        self._pages = 0  # what the last discovery cost
        self._absent: set[int] = set()  # members missing from the last discovery
        self.unsupported = False  # this PlanFix does not let us list tasks
        self.configure(numbers, projects, filters)

    def configure(
        self, numbers: Sequence[int], projects: Sequence[int], filters: Sequence[int]
    ) -> None:
        self.numbers, self.filters = list(numbers), list(filters)
        self.config_projects = set(projects)
        self._retry_at = {}
        self.pending = True  # numbers to resolve
        self.unsupported = False
        self.projects = set(self.config_projects)  # and the chats': projects_changed()
        self.discovered_at = -math.inf

    async def projects_changed(self) -> None:
        """The config's projects and those chats watch (/watch project 12):
        read afresh at once (at start, and after configure())."""
        self.projects = self.config_projects | set(await self.store.subscribed_projects())
        self.discovered_at = -math.inf
        if not self.projects and not self.filters:  # no discovery will run to empty it
            await self.store.set_watched(MEMBERS, [], self.clock())

    # --- numbers ------------------------------------------------------------------------

    def numbers_due(self, now: float) -> bool:
        return self.pending and now >= min(self._retry_at.values(), default=-math.inf)

    async def resolve(self, *, keep: bool = True) -> tuple[list[Task], list[PlanfixError]]:
        """Resolve the numbers not yet known, write the set to the store (not
        with ``keep=False``: `check` of another config changes nothing), and
        return the cards read (new members) and the errors met."""
        now = self.clock()
        ids: list[int] = []
        cards: list[Task] = []
        errors: list[PlanfixError] = []
        for number in self.numbers:
            known = await self.store.get_meta(f"number:{number}")
            if known is not None:
                ids.append(int(known))
                continue
            if self._retry_at.get(number, -math.inf) > now:
                continue
            try:
                task = await self.client.get_task_by_number(number)
            except PlanfixError as exc:
                if is_task_gone(exc):
                    if number not in self._missing:
                        self._missing.add(number)
                        log.warning("watch.numbers: PlanFix has no task with this number",
                                    number=number, error=exc.message)  # fmt: skip
                else:
                    errors.append(exc)
                    self._retry_at[number] = now + NUMBER_RETRY_S
                continue
            self._retry_at.pop(number, None)
            await self.store.set_meta(f"number:{number}", str(task.id))
            ids.append(task.id)
            cards.append(task)
        if keep:
            await self.store.set_watched(NUMBERS, ids, now)
        self.pending = bool(self._retry_at)
        return cards, errors

    # --- projects and saved filters -----------------------------------------------------

    def discovery_due(self, now: float, daily_budget: int) -> bool:
        if self.unsupported or (not self.projects and not self.filters):
            return False
        affordable = max(1.0, DISCOVERY_SHARE * daily_budget)
        spacing = max(self.discover_interval_s, 86400.0 * self._pages / affordable)
        return now >= self.discovered_at + spacing

    async def discover(self) -> tuple[set[int], list[Task]]:
        """Read every watched project's and saved filter's members: their ids
        and cards. PlanfixError propagates (the set stays as it was)."""
        self.discovered_at = self.clock()
        queries = [TaskQuery(project=p) for p in sorted(self.projects)]
        queries += [TaskQuery(target=str(f)) for f in self.filters]
        cards: list[Task] = []
        ids: set[int] = set()
        self._pages = 0
        for query in queries:
            read = partial(self.client.list_tasks, query)
            async for _, result, _ in every_page(read, lambda r: r.total):
                self._pages += 1
                cards += result.tasks
                ids |= {t.id for t in result.tasks} | set(result.unreadable)
        return ids, cards

    async def settle(self, found: set[int]) -> tuple[set[int], set[int]]:
        """A discovery found ``found``: write the members to the store; return
        (who left for good: missing twice running, who seems to have left)."""
        before = set(await self.store.watched_ids(MEMBERS))
        missing = before - found
        gone = missing & self._absent
        self._absent = missing - gone
        await self.store.set_watched(MEMBERS, sorted(found | self._absent), self.clock())
        return gone, missing

    def unsupported_here(self, exc: PlanfixError) -> None:
        self.unsupported = True
        log.warning(
            "watch.projects and watch.filters cannot be read: this PlanFix does not let the "
            "API user list tasks (task.getList)",
            error=exc.message,
        )

    def joins(self, card: Task) -> bool:
        """A card the feed brought that belongs in a watched project."""
        return card.project is not None and card.project.id in self.projects

    async def join(self, task_ids: Sequence[int]) -> None:
        for task_id in task_ids:
            await self.store.add_watched(task_id, MEMBERS, self.clock())
