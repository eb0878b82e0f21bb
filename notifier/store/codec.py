"""Snapshots and events as JSON, for the store. Explicit both ways: a stored
row must read back to an equal value after an upgrade, or fail loudly."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Any

from ..alerts.events import Event, EventKind, TaskSummary
from ..planfix.model import CustomValue, EndCondition, People, Periodicity, Ref, Task


def _default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__}")


def dumps(value: Task | Event) -> str:
    return json.dumps(asdict(value), default=_default, ensure_ascii=False, separators=(",", ":"))


def _dt(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _ref(raw: dict[str, Any] | None) -> Ref | None:
    return Ref(raw["id"], raw.get("name")) if raw else None


def _people(raw: dict[str, Any]) -> People:
    return People(
        users=tuple(Ref(r["id"], r.get("name")) for r in raw["users"]),
        groups=tuple(Ref(r["id"], r.get("name")) for r in raw["groups"]),
    )


def _periodicity(raw: dict[str, Any] | None) -> Periodicity | None:
    if not raw:
        return None
    end = raw.get("end_condition")
    return Periodicity(
        **{
            **raw,
            "days": tuple(raw["days"]),
            "start_date": _dt(raw["start_date"]),
            "end_condition": EndCondition(end["type"], _dt(end["date"]), end["repeat_count"])
            if end
            else None,
        }
    )


def load_task(text: str) -> Task:
    raw = json.loads(text)
    return Task(
        **{
            **raw,
            "owner": _ref(raw["owner"]),
            "parent": _ref(raw["parent"]),
            "project": _ref(raw["project"]),
            "client": _ref(raw["client"]),
            "begin_datetime": _dt(raw["begin_datetime"]),
            "start_time": _dt(raw["start_time"]),
            "end_time": _dt(raw["end_time"]),
            "workers": _people(raw["workers"]),
            "members": _people(raw["members"]),
            "auditors": _people(raw["auditors"]),
            "periodicity": _periodicity(raw["periodicity"]),
            "custom_data": tuple(CustomValue(**c) for c in raw["custom_data"]),
        }
    )


def load_event(text: str) -> Event:
    raw = json.loads(text)
    task = raw["task"]
    summary = None
    if task:
        fields = {
            **task,
            "workers": tuple(task["workers"]),
            "worker_ids": tuple(task.get("worker_ids", ())),
            "deadline": _dt(task["deadline"]),
        }
        summary = TaskSummary(**fields)
    return Event(
        kind=EventKind(raw["kind"]),
        at=datetime.fromisoformat(raw["at"]),
        task_id=raw["task_id"],
        task=summary,
        old=raw["old"],
        new=raw["new"],
        details=raw["details"],
        account=raw.get("account", ""),  # (events stored before accounts have none)
    )
