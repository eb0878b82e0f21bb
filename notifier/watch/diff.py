"""The differ: (old snapshot, new snapshot) → events. Pure: no I/O, no clock.

The first sight of a task is its baseline and raises nothing. A task that
comes back after 3001/3008 raises ``task_available_again`` and then whatever
changed while it was away.
"""

from __future__ import annotations

from datetime import datetime

from ..alerts.events import Event, EventKind, TaskSummary
from ..planfix.model import Task
from ..planfix.statuses import StatusCatalog


def format_when(value: datetime | None, has_time: bool) -> str | None:
    """Deadlines as people write them (in the API user's zone): 21.11 18:00."""
    if value is None:
        return None
    return value.strftime("%d.%m %H:%M" if has_time else "%d.%m")


def _names(task: Task) -> str:
    people = (*task.workers.users, *task.workers.groups)
    return ", ".join(p.name or f"#{p.id}" for p in people)


def _status(task: Task, catalog: StatusCatalog) -> str | None:
    if task.status is None:
        return None
    return catalog.name(task.status, task.status_set) or str(task.status)


def diff(old: Task | None, new: Task, catalog: StatusCatalog, at: datetime) -> list[Event]:
    if old is None:
        return []
    summary = TaskSummary.of(new, catalog)
    events: list[Event] = []

    def add(
        kind: EventKind, before: str | None = None, after: str | None = None, **details: object
    ) -> None:
        events.append(Event(kind, at, new.id, summary, before, after, dict(details)))

    if old.status != new.status:
        add(
            EventKind.STATUS_CHANGED,
            _status(old, catalog),
            _status(new, catalog),
            old_status=old.status,
            new_status=new.status,
        )
    if new.is_overdued and not old.is_overdued:
        add(EventKind.BECAME_OVERDUE, after=format_when(new.end_time, new.end_time_has_time))
    elif old.is_overdued and not new.is_overdued:
        add(EventKind.OVERDUE_RESOLVED, format_when(old.end_time, old.end_time_has_time))
    if new.is_close_to_deadline and not old.is_close_to_deadline and not new.is_overdued:
        add(EventKind.CLOSE_TO_DEADLINE, after=format_when(new.end_time, new.end_time_has_time))
    if new.is_not_accepted_in_time and not old.is_not_accepted_in_time:
        add(EventKind.NOT_ACCEPTED_IN_TIME)
    if (old.end_time, old.end_time_has_time) != (new.end_time, new.end_time_has_time):
        add(
            EventKind.DEADLINE_CHANGED,
            format_when(old.end_time, old.end_time_has_time),
            format_when(new.end_time, new.end_time_has_time),
        )
    if old.workers.ids != new.workers.ids:
        add(EventKind.WORKERS_CHANGED, _names(old), _names(new))
    if old.title != new.title:
        add(EventKind.TITLE_CHANGED, old.title, new.title)
    if old.importance != new.importance:
        add(EventKind.IMPORTANCE_CHANGED, old.importance, new.importance)
    return events


def unavailable(
    last_known: Task | None, task_id: int, code: str, catalog: StatusCatalog, at: datetime
) -> Event:
    summary = TaskSummary.of(last_known, catalog) if last_known else None
    return Event(EventKind.TASK_UNAVAILABLE, at, task_id, summary, details={"code": code})


def available_again(new: Task, catalog: StatusCatalog, at: datetime) -> Event:
    return Event(EventKind.TASK_AVAILABLE_AGAIN, at, new.id, TaskSummary.of(new, catalog))


def is_change(old: Task | None, new: Task) -> bool:
    """Did the task change in a way its people did, not the clock? (For learning
    each task's change rate; the deadline flags flip by time alone.)"""
    if old is None:
        return False
    return (
        old.status != new.status
        or old.title != new.title
        or old.importance != new.importance
        or (old.end_time, old.end_time_has_time) != (new.end_time, new.end_time_has_time)
        or old.workers.ids != new.workers.ids
        or old.description != new.description
    )
