"""Status names per process (``statusSet``), from ``taskStatus.*``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .model import FINISHED_SYSTEM_STATUSES, StatusSet, TaskStatus


@dataclass(frozen=True, slots=True)
class StatusCatalog:
    sets: Mapping[int, StatusSet] = field(default_factory=dict)
    by_set: Mapping[int, Mapping[int, TaskStatus]] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> StatusCatalog:
        return cls()

    @classmethod
    def build(
        cls, sets: Sequence[StatusSet], statuses: Mapping[int, Sequence[TaskStatus]]
    ) -> StatusCatalog:
        return cls(
            sets={s.id: s for s in sets},
            by_set={set_id: {st.id: st for st in items} for set_id, items in statuses.items()},
        )

    def find(self, status: int, status_set: int | None) -> TaskStatus | None:
        if status_set is not None and status_set in self.by_set:
            return self.by_set[status_set].get(status)
        # No process given (the seed's card has none): any process that knows it.
        for statuses in self.by_set.values():
            if status in statuses:
                return statuses[status]
        return None

    def name(self, status: int | None, status_set: int | None = None) -> str | None:
        if status is None:
            return None
        found = self.find(status, status_set)
        return found.name if found else None

    def is_finished(self, status: int | None, status_set: int | None = None) -> bool:
        if status is None:
            return False
        found = self.find(status, status_set)
        if found is not None:
            return not found.is_active
        return status in FINISHED_SYSTEM_STATUSES
