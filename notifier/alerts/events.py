"""Events: what happened to a task (or to the service), ready to route and render.

Event names are a contract (DESIGN.md): users' routes filter on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..planfix.model import Task
from ..planfix.statuses import StatusCatalog


class EventKind(enum.StrEnum):
    STATUS_CHANGED = "status_changed"
    BECAME_OVERDUE = "became_overdue"
    OVERDUE_RESOLVED = "overdue_resolved"
    CLOSE_TO_DEADLINE = "close_to_deadline"
    NOT_ACCEPTED_IN_TIME = "not_accepted_in_time"
    DEADLINE_CHANGED = "deadline_changed"
    WORKERS_CHANGED = "workers_changed"
    TITLE_CHANGED = "title_changed"
    IMPORTANCE_CHANGED = "importance_changed"
    TASK_UNAVAILABLE = "task_unavailable"
    TASK_AVAILABLE_AGAIN = "task_available_again"
    # For the operator, not about one task:
    QUOTA_EXHAUSTED = "quota_exhausted"
    PLANFIX_FAILING = "planfix_failing"
    PLANFIX_RECOVERED = "planfix_recovered"
    QUOTA_RESTORED = "quota_restored"
    CHANNEL_FAILING = "channel_failing"
    CHANNEL_RECOVERED = "channel_recovered"

    @property
    def operator(self) -> bool:
        return self.value in _OPERATOR


_OPERATOR = frozenset(
    {
        "quota_exhausted",
        "quota_restored",
        "planfix_failing",
        "planfix_recovered",
        "channel_failing",
        "channel_recovered",
    }
)


TASK_EVENT_KINDS = tuple(k.value for k in EventKind if not k.operator)
ALL_EVENT_KINDS = tuple(k.value for k in EventKind)


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """What a message about a task shows, taken when the event was raised."""

    id: int
    general: int | None
    title: str
    status: int | None
    status_name: str | None
    importance: str | None
    project: str | None
    workers: tuple[str, ...]
    deadline: datetime | None
    deadline_has_time: bool
    project_id: int | None = None
    worker_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, task: Task, catalog: StatusCatalog) -> TaskSummary:
        project = task.project
        return cls(
            id=task.id,
            general=task.general,
            title=task.title,
            status=task.status,
            status_name=catalog.name(task.status, task.status_set),
            importance=task.importance,
            project=(project.name or f"#{project.id}") if project else None,
            workers=tuple(
                u.name or f"#{u.id}" for u in (*task.workers.users, *task.workers.groups)
            ),
            deadline=task.end_time,
            deadline_has_time=task.end_time_has_time,
            project_id=project.id if project else None,
            worker_ids=tuple(u.id for u in task.workers.users),
        )


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: datetime
    task_id: int | None = None
    task: TaskSummary | None = None
    old: str | None = None  # the value before, in words (a status name, a date…)
    new: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # raw values, error codes
    account: str = ""  # the account's name, where the service watches several
