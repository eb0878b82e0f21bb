"""Events and channels for tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from notifier.alerts.events import Event, EventKind, TaskSummary
from notifier.alerts.render import Renderer
from notifier.channels.base import Channel, channel_types

MSK = ZoneInfo("Europe/Moscow")


def summary(task_id: int = 1001, **fields: Any) -> TaskSummary:
    values: dict[str, Any] = {
        "id": task_id,
        "general": task_id - 1000 + 400,
        "title": "Подготовить отчёт по продажам",
        "status": 3,
        "status_name": "Завершённая",
        "importance": "AVERAGE",
        "project": "Сайт компании",
        "workers": ("Иван Петров",),
        "deadline": datetime(2026, 11, 21, 18, 0, tzinfo=MSK),
        "deadline_has_time": True,
        "project_id": 12,
        "worker_ids": (1,),
    }
    values.update(fields)
    return TaskSummary(**values)


def event(
    kind: EventKind = EventKind.STATUS_CHANGED, task_id: int | None = 1001, **fields: Any
) -> Event:
    task = fields.pop("task", summary(task_id) if task_id else None)
    values: dict[str, Any] = {"old": "В работе", "new": "Завершённая", "details": {}}
    values.update(fields)
    return Event(kind, datetime(2026, 11, 23, 9, 0, tzinfo=UTC), task_id, task, **values)


def renderer(**options: Any) -> Renderer:
    return Renderer(account="acme", **options)


def channel(name: str, options: dict[str, Any], **render: Any) -> Channel:
    kind = channel_types()[options["type"]]
    return kind(name, kind.Options.model_validate(options), renderer(**render))
