"""The differ, table by table: every event kind, and the silences."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from notifier.alerts.events import EventKind
from notifier.planfix.model import People, Ref, StatusSet, Task, TaskStatus
from notifier.planfix.statuses import StatusCatalog
from notifier.watch.diff import available_again, diff, is_change, unavailable

MSK = ZoneInfo("Europe/Moscow")
AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
CATALOG = StatusCatalog.build(
    [StatusSet(1, "Стандартный")],
    {1: [TaskStatus(2, "В работе"), TaskStatus(3, "Завершённая", is_active=False)]},
)
BASE = Task(
    id=7,
    general=418,
    title="Отчёт",
    importance="AVERAGE",
    status=2,
    status_set=1,
    end_time=datetime(2026, 11, 21, 18, 0, tzinfo=MSK),
    workers=People(users=(Ref(1, "Иван"),)),
    project=Ref(12, "Сайт"),
)

CASES = [
    ("status", {"status": 3}, EventKind.STATUS_CHANGED, "В работе", "Завершённая"),
    ("overdue", {"is_overdued": True}, EventKind.BECAME_OVERDUE, None, "21.11 18:00"),
    (
        "close",
        {"is_close_to_deadline": True},
        EventKind.CLOSE_TO_DEADLINE,
        None,
        "21.11 18:00",
    ),
    ("not accepted", {"is_not_accepted_in_time": True}, EventKind.NOT_ACCEPTED_IN_TIME, None, None),
    (
        "deadline",
        {"end_time": datetime(2026, 11, 25, 12, 0, tzinfo=MSK)},
        EventKind.DEADLINE_CHANGED,
        "21.11 18:00",
        "25.11 12:00",
    ),
    (
        "deadline to a date",
        {"end_time": datetime(2026, 11, 25, tzinfo=MSK), "end_time_has_time": False},
        EventKind.DEADLINE_CHANGED,
        "21.11 18:00",
        "25.11",
    ),
    (
        "workers",
        {"workers": People(users=(Ref(2, "Мария"),), groups=(Ref(20, "Продажи"),))},
        EventKind.WORKERS_CHANGED,
        "Иван",
        "Мария, Продажи",
    ),
    ("title", {"title": "Отчёт за ноябрь"}, EventKind.TITLE_CHANGED, "Отчёт", "Отчёт за ноябрь"),
    ("importance", {"importance": "HIGH"}, EventKind.IMPORTANCE_CHANGED, "AVERAGE", "HIGH"),
]


@pytest.mark.parametrize(("name", "change", "kind", "old", "new"), CASES, ids=[c[0] for c in CASES])
def test_each_change_raises_its_event(
    name: str, change: dict[str, object], kind: EventKind, old: str | None, new: str | None
) -> None:
    after = replace(BASE, **change)  # type: ignore[arg-type]
    events = diff(BASE, after, CATALOG, AT)
    assert [(e.kind, e.old, e.new) for e in events] == [(kind, old, new)]
    event = events[0]
    assert event.task_id == 7 and event.at == AT
    assert event.task is not None and event.task.general == 418 and event.task.project == "Сайт"


def test_overdue_resolved() -> None:
    before = replace(BASE, is_overdued=True)
    events = diff(before, replace(BASE, status=3), CATALOG, AT)
    assert [e.kind for e in events] == [EventKind.STATUS_CHANGED, EventKind.OVERDUE_RESOLVED]


def test_close_to_deadline_is_not_raised_together_with_overdue() -> None:
    after = replace(BASE, is_overdued=True, is_close_to_deadline=True)
    assert [e.kind for e in diff(BASE, after, CATALOG, AT)] == [EventKind.BECAME_OVERDUE]


def test_first_sight_is_a_baseline() -> None:
    assert diff(None, BASE, CATALOG, AT) == []


def test_no_change_no_event() -> None:
    assert diff(BASE, replace(BASE), CATALOG, AT) == []


def test_names_only_change_no_event() -> None:
    renamed = replace(BASE, workers=People(users=(Ref(1, None),)), starred=True)
    assert diff(BASE, renamed, CATALOG, AT) == []


def test_unknown_status_name_falls_back_to_the_number() -> None:
    events = diff(BASE, replace(BASE, status=42), StatusCatalog.empty(), AT)
    assert (events[0].old, events[0].new) == ("2", "42")


def test_unavailable_and_back() -> None:
    gone = unavailable(BASE, 7, "3001", CATALOG, AT)
    assert gone.kind is EventKind.TASK_UNAVAILABLE and gone.details == {"code": "3001"}
    assert gone.task is not None and gone.task.title == "Отчёт"
    back = available_again(BASE, CATALOG, AT)
    assert back.kind is EventKind.TASK_AVAILABLE_AGAIN and back.task_id == 7


def test_is_change_ignores_the_clock_flags() -> None:
    assert not is_change(BASE, replace(BASE, is_overdued=True, is_close_to_deadline=True))
    assert is_change(BASE, replace(BASE, status=3))
    assert not is_change(None, BASE)
