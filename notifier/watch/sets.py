"""Watch sets beyond plain ids. People know a task by its number (the 418 in
``…/task/418``), the API by its id, and the two differ: ``[watch] numbers``
are resolved to ids with one ``task.get`` each, once, and remembered in the
store. The card read to resolve a number is that task's baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ..ops import logging as oplog
from ..planfix.client import PlanfixClient
from ..planfix.errors import PlanfixError, is_task_gone
from ..planfix.model import Task
from ..store import Store

log = oplog.get(__name__)

SOURCE = "config:numbers"  # the watch set's source in the store


class WatchSets:
    def __init__(
        self,
        client: PlanfixClient,
        store: Store,
        numbers: Sequence[int],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.store, self.clock = client, store, clock
        self.numbers = list(numbers)
        self.pending = True  # something to resolve or to write to the store
        self._missing: set[int] = set()  # numbers PlanFix does not know, said once each

    def set_numbers(self, numbers: Sequence[int]) -> None:
        self.numbers, self.pending = list(numbers), True

    async def refresh(self, ingest: Callable[[Task], object]) -> None:
        """Resolve the numbers not yet known and write the set to the store;
        a card read on the way goes to ``ingest`` (the baseline). A PlanFix
        failure leaves the rest for the next round."""
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
                    self.store.set_watched(SOURCE, ids, self.clock())
                    return  # asked again next round
                if number not in self._missing:
                    self._missing.add(number)
                    log.warning("watch.numbers: PlanFix has no task with this number",
                                number=number, error=exc.message)  # fmt: skip
                continue
            self.store.set_meta(f"number:{number}", str(task.id))
            ids.append(task.id)
            self.store.set_watched(SOURCE, ids, self.clock())
            ingest(task)
        self.store.set_watched(SOURCE, ids, self.clock())
        self.pending = False
