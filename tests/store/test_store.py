"""The state file: schema versions, permissions, round trips, atomicity."""

from __future__ import annotations

import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.alerts.events import Event, EventKind, TaskSummary
from notifier.planfix.model import CustomValue, EndCondition, People, Periodicity, Ref, Task
from notifier.store import Store, StoreError
from notifier.store.migrations import MIGRATIONS
from notifier.watch.state import Card, TaskRecord

MSK = ZoneInfo("Europe/Moscow")
TASK = Task(
    id=5,
    general=12,
    title="Отчёт «квартальный» & <прочее>",
    status=2,
    status_set=1,
    owner=Ref(1, "Иван"),
    end_time=datetime(2026, 11, 25, tzinfo=MSK),
    end_time_has_time=False,
    workers=People(users=(Ref(1, "Иван"),), groups=(Ref(2),)),
    periodicity=Periodicity(
        kind="weekly",
        days=(1, 3),
        end_condition=EndCondition("BYENDDATE", datetime(2027, 1, 1, tzinfo=MSK)),
    ),
    custom_data=(CustomValue(9, "Бюджет", "1500", None),),
)
EVENT = Event(
    EventKind.STATUS_CHANGED,
    datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
    5,
    TaskSummary(5, 12, "Отчёт", 3, "Завершённая", "HIGH", "Сайт", ("Иван",), None, True),
    "В работе",
    "Завершённая",
    {"old_status": 2, "new_status": 3},
)


def test_new_file_is_private_and_current(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.sqlite3"
    store = Store(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.schema_version == len(MIGRATIONS)
    store.save_polls([(TaskRecord(1, Card.of(TASK)), [])], queued_at=100.0)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
    store.close()


def test_records_and_events_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    record = TaskRecord(5, Card.of(TASK), 100.0, 90.0, "ok", None, 0, False, 1.5, 3600.0, 7)
    stored = store.save_polls([(record, [EVENT])], queued_at=100.0)
    assert [e for _, e in stored] == [EVENT]
    store.close()
    reopened = Store(tmp_path / "s.sqlite3")
    kept = replace(record, card=Card.of(TASK).stored())  # (its text: in the store only)
    assert reopened.load_records([5, 6]) == {5: kept, 6: TaskRecord(6)}
    assert reopened.load_card(5) == TASK  # the card reads back as it was
    assert reopened.events_after(0) == stored


def test_a_failed_save_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    bad = Event(
        EventKind.STATUS_CHANGED, datetime(2026, 1, 1, tzinfo=UTC), 5, details={"x": object()}
    )
    with pytest.raises(TypeError):
        store.save_polls([(TaskRecord(5, Card.of(TASK)), [EVENT, bad])], queued_at=100.0)
    assert store.events_after(0) == []
    assert store.load_records([5]) == {5: TaskRecord(5)}


def test_watch_set_by_source(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    store.set_watched("config", [3, 1, 2], now=1.0)
    store.add_watched(9, "chat:-100", now=2.0)
    store.add_watched(2, "chat:-100", now=2.0)
    store.set_watched("config", [1, 4], now=3.0)
    assert store.watched_ids() == [1, 2, 4, 9]
    store.remove_watched(2, "chat:-100")
    assert store.watched_ids() == [1, 4, 9]


def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer planfix-notifier"):
        Store(path)
    assert path.read_bytes() == before


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(path)


def test_a_card_in_memory_keeps_the_planners_facts_and_a_digest(tmp_path: Path) -> None:
    card = Card.of(TASK)
    assert TASK.end_time is not None
    assert card.deadline == (TASK.end_time + timedelta(days=1)).timestamp()  # a date: its day's end
    assert (card.status, card.status_set, card.general, card.overdued) == (2, 1, 12, False)
    assert card.text is not None and card.stored().text is None  # the store keeps the card
    assert card.stored().digest == card.digest == Card.of(replace(TASK)).digest
    assert Card.of(replace(TASK, title="другое")).digest != card.digest
    store = Store(tmp_path / "s.sqlite3")
    store.save_polls([(TaskRecord(5, card), [])], queued_at=1.0)
    failed = TaskRecord(5, card.stored(), last_result="error")  # a failed poll keeps the card
    store.save_polls([(failed, [])], queued_at=2.0)
    assert store.load_card(5) == TASK and store.load_records([5])[5].card == card.stored()


def test_the_operators_view_of_the_outbox(tmp_path: Path) -> None:
    """Per channel: counts, the oldest waiting, the last error; the oldest
    undelivered ignores a delivery held back unattempted (quiet hours)."""
    store = Store(tmp_path / "s.sqlite3")
    route = lambda event: [("team", "-100"), ("mail", "a@b")]  # noqa: E731
    ((first, _),) = store.add_events([EVENT], route, queued_at=100.0)
    (team,), (mail,) = store.outbox_pending("team"), store.outbox_pending("mail")
    store.outbox_retry([team.id], 5000.0, None, attempt=False)  # quiet hours until 5000
    assert store.outbox_oldest_undelivered(now=200.0) == 100.0  # mail's is due
    store.outbox_sent([mail.id], 200.0)
    assert store.outbox_oldest_undelivered(now=300.0) is None  # team's only waits for morning
    store.outbox_retry([team.id], 5000.0, "HTTP 502")  # tried, failed: it counts
    assert store.outbox_oldest_undelivered(now=300.0) == 100.0
    ((second, _),) = store.add_events([EVENT], route, queued_at=300.0)
    store.outbox_dead([r.id for r in store.outbox_pending("mail")], "550 no such user", 400.0)
    backlog = {c.channel: c for c in store.outbox_by_channel()}
    assert (backlog["team"].pending, backlog["team"].last_error) == (2, "HTTP 502")
    assert backlog["team"].oldest_pending_at == 100.0
    assert (backlog["mail"].dead, backlog["mail"].sent) == (1, 1)
    assert backlog["mail"].last_error == "550 no such user"
    dead = store.outbox_items("dead")[0]
    assert store.outbox_revive(dead.id, 500.0) and not store.outbox_revive(dead.id, 500.0)
    (again,) = store.outbox_pending("mail")
    assert (again.id, again.attempts, again.last_error, again.created_at) == (
        dead.id,
        0,
        None,
        500.0,
    )
    assert [event_id for event_id, _, _ in store.recent_events(5)] == [second, first]
