"""The store on both backends: round trips, atomicity, the outbox; SQLite's
file (versions, permissions) and PostgreSQL's schema and lock."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg import sql

from notifier.alerts.events import Event, EventKind, TaskSummary
from notifier.planfix.model import CustomValue, EndCondition, People, Periodicity, Ref, Task
from notifier.store import Store, StoreError
from notifier.store.migrations import MIGRATIONS, POSTGRES_MIGRATIONS
from notifier.store.postgres import PostgresDatabase
from notifier.watch.quota import LedgerDay
from notifier.watch.state import Card, TaskRecord
from tests import postgres
from tests.store.conftest import Backend

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


def both(event: Event) -> list[tuple[str, str]]:
    return [("team", "-100"), ("mail", "a@b")]


async def test_new_file_is_private_and_current(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.sqlite3"
    store = Store(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await store.schema_version() == len(MIGRATIONS)
    await store.save_polls([(TaskRecord(1, Card.of(TASK)), [])], queued_at=100.0)
    for extra in ("-wal", "-shm"):
        side = path.with_name(path.name + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
    await store.close()


async def test_records_and_events_round_trip(backend: Backend, store: Store) -> None:
    record = TaskRecord(5, Card.of(TASK), 100.0, 90.0, "ok", None, 0, False, 1.5, 3600.0, 7)
    stored = await store.save_polls([(record, [EVENT])], queued_at=100.0)
    assert [e for _, e in stored] == [EVENT]
    await store.close()
    reopened = backend.open()
    kept = replace(record, card=Card.of(TASK).stored())  # (its text: in the store only)
    assert await reopened.load_records([5, 6]) == {5: kept, 6: TaskRecord(6)}
    assert await reopened.load_card(5) == TASK  # the card reads back as it was
    assert await reopened.events_after(0) == stored


async def test_times_keep_their_fractions(store: Store) -> None:
    # PostgreSQL's REAL is 32-bit: an epoch time in it loses its seconds.
    at = 1_795_000_000.123456
    await store.save_polls([(TaskRecord(7, last_poll_at=at), [])], queued_at=at)
    assert (await store.load_records([7]))[7].last_poll_at == at


async def test_big_ids_fit(store: Store) -> None:
    chat = -1001234567890  # a Telegram supergroup: beyond 32 bits
    await store.subscribe(chat, 3_000_000_000, ["became_overdue"], 5_000_000_000, 1.0)
    (sub,) = await store.subscribers(3_000_000_000)
    assert (sub.chat_id, sub.task_id, sub.events, sub.created_by) == (
        chat, 3_000_000_000, ("became_overdue",), 5_000_000_000,
    )  # fmt: skip


async def test_a_failed_save_leaves_nothing(store: Store) -> None:
    bad = Event(
        EventKind.STATUS_CHANGED, datetime(2026, 1, 1, tzinfo=UTC), 5, details={"x": object()}
    )
    with pytest.raises(TypeError):
        await store.save_polls([(TaskRecord(5, Card.of(TASK)), [EVENT, bad])], queued_at=100.0)
    assert await store.events_after(0) == []
    assert await store.load_records([5]) == {5: TaskRecord(5)}


async def test_watch_set_by_source(store: Store) -> None:
    await store.set_watched("config", [3, 1, 2], now=1.0)
    await store.add_watched(9, "chat:-100", now=2.0)
    await store.add_watched(2, "chat:-100", now=2.0)
    await store.add_watched(2, "chat:-100", now=2.5)  # again: nothing new
    await store.set_watched("config", [1, 4], now=3.0)
    assert await store.watched_ids() == [1, 2, 4, 9]
    assert await store.watched_ids("chat:-100") == [2, 9]
    await store.remove_watched(2, "chat:-100")
    assert await store.watched_ids() == [1, 4, 9]
    assert await store.watch_sources([1, 9]) == {1: ["config"], 9: ["chat:-100"]}


async def test_subscriptions_and_mutes(store: Store) -> None:
    await store.subscribe(-100, 5, None, 1, 1.0)
    await store.subscribe(-100, 6, ["status_changed"], 1, 1.0)
    await store.subscribe(-100, 6, ["became_overdue"], 1, 2.0)  # again: its events replaced
    await store.subscribe(-200, 5, None, 2, 1.0)
    assert [s.task_id for s in await store.subscriptions(-100)] == [5, 6]
    assert (await store.subscribers(6))[0].events == ("became_overdue",)
    assert await store.watched_ids("chat:-100") == [5, 6]
    assert await store.mute(-100, None, 50.0) == 2
    assert await store.mute(-200, 5, 60.0) == 1
    muted = {s.chat_id: s.muted_until for s in await store.subscribers(5)}
    assert muted == {-100: 50.0, -200: 60.0}
    assert await store.unsubscribe(-100, 5) and not await store.unsubscribe(-100, 5)
    assert await store.watched_ids("chat:-100") == [6]
    await store.subscribe_project(-100, 12, 1, 1.0)
    await store.subscribe_project(-100, 12, 1, 2.0)  # again: nothing new
    await store.subscribe_project(-200, 12, 2, 1.0)
    assert await store.subscribed_projects() == [12]
    assert sorted(s.chat_id for s in await store.project_subscribers(12)) == [-200, -100]
    assert await store.unsubscribe_project(-100, 12)
    assert await store.subscribed_projects(-100) == []


async def test_meta_and_the_quota_day(store: Store) -> None:
    assert await store.get_meta("feed.cursor") is None
    await store.set_meta("feed.cursor", "1.5")
    await store.set_meta("feed.cursor", "2.5")
    assert await store.get_meta("feed.cursor") == "2.5"
    day = date(2026, 11, 30)
    assert await store.load_quota(day) is None
    row = LedgerDay(day, used=7, server_remaining=100, used_at_server=5, on_demand=2)
    row.hours[13] = 7
    await store.save_quota(row)
    row.used, row.exhausted = 8, True
    await store.save_quota(row)
    assert await store.load_quota(day) == row


async def test_the_clock_step_shifts_pending_deliveries(store: Store) -> None:
    await store.add_events([EVENT], [both(EVENT)], queued_at=100.0)
    (team,) = await store.outbox_pending("team")
    await store.outbox_retry([team.id], 500.0, "HTTP 502")
    await store.outbox_shift(-50.0)
    (team,) = await store.outbox_pending("team")
    assert (team.created_at, team.next_attempt_at, team.attempts) == (50.0, 450.0, 1)
    await store.outbox_due_now(["team"], 200.0)
    assert (await store.outbox_pending("team"))[0].next_attempt_at == 200.0
    await store.outbox_due_now(["team"], 300.0)  # already due: kept
    assert (await store.outbox_pending("team"))[0].next_attempt_at == 200.0


async def test_pending_deliveries_come_with_their_events_however_often_asked(
    store: Store,
) -> None:
    """(Their events are read once: a pass over a backlog reads it every time.)"""
    later = dataclasses.replace(EVENT, task_id=6, old="Новая")
    await store.add_events([EVENT], [both(EVENT)], queued_at=100.0)
    (first,) = await store.outbox_pending("team")
    await store.add_events([later], [both(later)], queued_at=101.0)
    again = await store.outbox_pending("team")
    assert [row.event for row in again] == [EVENT, later] and again[0] == first
    await store.outbox_sent([first.id], 102.0)
    assert [row.event for row in await store.outbox_pending("team")] == [later]
    assert [row.event for row in await store.outbox_pending("mail")] == [EVENT, later]


async def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    await Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="newer planfix-notifier"):
        Store(path)
    assert path.read_bytes() == before


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        Store(path)


async def test_a_card_in_memory_keeps_the_planners_facts_and_a_digest(store: Store) -> None:
    card = Card.of(TASK)
    assert TASK.end_time is not None
    assert card.deadline == (TASK.end_time + timedelta(days=1)).timestamp()  # a date: its day's end
    assert (card.status, card.status_set, card.general, card.overdued) == (2, 1, 12, False)
    assert card.text is not None and card.stored().text is None  # the store keeps the card
    assert card.stored().digest == card.digest == Card.of(replace(TASK)).digest
    assert Card.of(replace(TASK, title="другое")).digest != card.digest
    await store.save_polls([(TaskRecord(5, card), [])], queued_at=1.0)
    failed = TaskRecord(5, card.stored(), last_result="error")  # a failed poll keeps the card
    await store.save_polls([(failed, [])], queued_at=2.0)
    assert await store.load_card(5) == TASK
    assert (await store.load_records([5]))[5].card == card.stored()
    await store.save_polls([(TaskRecord(5), [])], queued_at=3.0)  # no card: it is cleared
    assert await store.load_card(5) is None


async def test_the_operators_view_of_the_outbox(store: Store) -> None:
    """Per channel: counts, the oldest waiting, the last error; the oldest
    undelivered ignores a delivery held back unattempted (quiet hours)."""
    ((first, _),) = await store.add_events([EVENT], [both(EVENT)], queued_at=100.0)
    (team,), (mail,) = await store.outbox_pending("team"), await store.outbox_pending("mail")
    await store.outbox_retry([team.id], 5000.0, None, attempt=False)  # quiet hours until 5000
    assert await store.outbox_oldest_undelivered(now=200.0) == 100.0  # mail's is due
    await store.outbox_sent([mail.id], 200.0)
    assert await store.outbox_oldest_undelivered(now=300.0) is None  # team's waits for morning
    await store.outbox_retry([team.id], 5000.0, "HTTP 502")  # tried, failed: it counts
    assert await store.outbox_oldest_undelivered(now=300.0) == 100.0
    ((second, _),) = await store.add_events([EVENT], [both(EVENT)], queued_at=300.0)
    pending_mail = [r.id for r in await store.outbox_pending("mail")]
    await store.outbox_dead(pending_mail, "550 no such user", 400.0)
    backlog = {c.channel: c for c in await store.outbox_by_channel()}
    assert (backlog["team"].pending, backlog["team"].last_error) == (2, "HTTP 502")
    assert backlog["team"].oldest_pending_at == 100.0
    assert (backlog["mail"].dead, backlog["mail"].sent) == (1, 1)
    assert backlog["mail"].last_error == "550 no such user"
    assert await store.outbox_counts() == {"pending": 2, "sent": 1, "dead": 1}
    assert await store.dead_letters() == [("mail", "a@b", "550 no such user", 400.0)]
    dead = (await store.outbox_items("dead"))[0]
    assert await store.outbox_channel(dead.id) == "mail"
    assert await store.outbox_revive(dead.id, 500.0)
    assert not await store.outbox_revive(dead.id, 500.0)
    (again,) = await store.outbox_pending("mail")
    assert (again.id, again.attempts, again.last_error, again.created_at) == (
        dead.id,
        0,
        None,
        500.0,
    )
    assert [event_id for event_id, _, _ in await store.recent_events(5)] == [second, first]
    assert set(await store.last_changes([5])) == {5}


async def test_many_ids_are_read_in_chunks(store: Store) -> None:
    none: list[Event] = []
    records = [(TaskRecord(i, last_poll_at=float(i)), none) for i in range(1, 1301)]
    await store.save_polls(records, queued_at=1.0)
    loaded = await store.load_records(range(1, 1302))
    assert loaded[1300].last_poll_at == 1300.0 and loaded[1301] == TaskRecord(1301)
    assert len(await store.load_records(range(400, 1100))) == 700  # by key, 500 at a time


# --- PostgreSQL's own ----------------------------------------------------------------------


async def test_postgres_instances_starting_together_migrate_once() -> None:
    with postgres.fresh_schema() as schema:
        stores = [Store(PostgresDatabase(postgres.URL, schema)) for _ in range(3)]
        try:
            versions = await asyncio.gather(*(s.schema_version() for s in stores))
            assert versions == [len(POSTGRES_MIGRATIONS)] * 3
        finally:
            for each in stores:
                await each.close()


async def test_postgres_refuses_a_newer_schema_untouched() -> None:
    with postgres.fresh_schema() as schema:
        store = Store(PostgresDatabase(postgres.URL, schema))
        await store.set_meta("kept", "yes")
        await store.close()
        with psycopg.connect(postgres.URL, autocommit=True) as conn:
            table = sql.Identifier(schema, "schema_version")
            conn.execute(sql.SQL("INSERT INTO {} VALUES (99)").format(table))
        newer = Store(PostgresDatabase(postgres.URL, schema))
        with pytest.raises(StoreError, match="newer planfix-notifier"):
            await newer.get_meta("kept")
        await newer.close()


async def test_postgres_unreachable_names_the_server_never_the_password() -> None:
    url = "postgresql://robot:s3cr3t-pw@127.0.0.1:9/test"  # nothing listens on port 9
    store = Store(PostgresDatabase(url, "x"))
    with pytest.raises(StoreError) as raised:
        await store.watched_ids()
    assert "PostgreSQL 127.0.0.1:9/test" in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "s3cr3t" not in repr(raised.value.__cause__)
    await store.close()


async def test_a_lease_is_one_holders_until_it_expires(store: Store) -> None:
    assert await store.lease_take("poll:acme", "a", 100.0, 20.0) == 100.0
    assert await store.lease_take("poll:acme", "b", 110.0, 20.0) is None  # a holds it
    assert await store.lease_take("poll:acme", "a", 115.0, 20.0) == 100.0  # renewed: same since
    assert await store.lease_take("poll:acme", "b", 130.0, 20.0) is None  # renewed until 135
    assert await store.lease_take("poll:acme", "b", 136.0, 20.0) == 136.0  # expired: taken over
    assert await store.lease_take("bot", "a", 136.0, 20.0) == 136.0
    assert await store.leases("poll:") == [("poll:acme", "b", 136.0, 156.0)]
    await store.lease_give_back(["poll:acme"], "a")  # not a's any more: kept
    await store.lease_give_back(["bot"], "a")
    assert [name for name, *_ in await store.leases()] == ["poll:acme"]
    assert await store.lease_take("bot", "b", 137.0, 20.0) == 137.0  # given back: free at once


async def test_instances_asking_at_once_one_gets_the_lease(backend: Backend) -> None:
    stores = [backend.open() for _ in range(3)]
    got = await asyncio.gather(
        *(s.lease_take("lane:team:-100", f"i{n}", 100.0, 20.0) for n, s in enumerate(stores))
    )
    assert sorted(map(str, got)) == ["100.0", "None", "None"]
    for each in stores:
        await each.close()


async def test_the_quota_is_counted_where_every_instance_counts(backend: Backend) -> None:
    """Instances counting at once never pass the budget: the store refuses
    the request beyond it, whatever each had seen."""
    stores = [backend.open() for _ in range(3)]
    day = date(2026, 11, 30)

    async def count(store: Store, on_demand: bool) -> bool:
        row = await store.quota_count(day, 10, on_demand=on_demand, used_below=30, on_demand_cap=4)
        return row is not None

    asked = [count(stores[n % 3], on_demand=n % 5 == 0) for n in range(50)]
    granted = await asyncio.gather(*asked)
    row = await stores[0].load_quota(day)
    assert row is not None and row.used == sum(granted) == 30
    assert row.on_demand <= 4 and row.hours[10] == 30
    row.exhausted = True
    await stores[1].quota_advice(row)
    assert await count(stores[2], on_demand=True) is False  # PlanFix said 0007: none more
    for each in stores:
        await each.close()


async def test_the_watch_set_and_the_projects_have_versions_of_their_own(store: Store) -> None:
    """The instance polling follows another's /watch: a change of the watch
    set re-reads the set, one of the chats' projects (and only that) their
    members."""
    assert await store.versions() == (0, 0)
    await store.set_watched("config", [1, 2], 1.0)
    await store.set_watched("config", [1, 2], 2.0)  # no change: no new version
    await store.add_watched(3, "push", 3.0)
    await store.subscribe(-100, 4, None, 7, 4.0)
    assert await store.versions() == (3, 0)
    await store.subscribe_project(-100, 12, 7, 5.0)
    await store.unsubscribe_project(-100, 12)
    await store.unsubscribe(-100, 4)
    assert await store.versions() == (4, 2)


async def test_a_days_first_request_and_a_0007_kept_whoever_writes_next(store: Store) -> None:
    day = date(2026, 12, 1)
    first = await store.quota_count(day, 0, on_demand=True, used_below=5, on_demand_cap=1)
    assert first is not None and (first.used, first.on_demand, first.hours[0]) == (1, 1, 1)
    again = await store.quota_count(day, 0, on_demand=True, used_below=5, on_demand_cap=1)
    assert again is None  # the on-demand reserve (1) is spent; the planner may go on
    planned = await store.quota_count(day, 1, on_demand=False, used_below=5, on_demand_cap=1)
    assert planned is not None and (planned.used, planned.hours[1]) == (2, 1)
    planned.exhausted = True  # PlanFix said 0007
    await store.quota_advice(planned)
    stale = replace(planned, exhausted=False)  # another instance, not yet told
    await store.quota_advice(stale)
    row = await store.load_quota(day)
    assert row is not None and row.exhausted
    await store.quota_advice(stale, unblock=True)  # the operator's reset (a reload)
    row = await store.load_quota(day)
    assert row is not None and not row.exhausted


async def test_each_account_has_its_own_watch_set_cards_quota_chats_and_facts(
    store: Store,
) -> None:
    """Task ids are an account's: two accounts' task 5 never meet. The
    outbox is the whole state's (one sender for every account)."""
    other = store.for_account("client2")
    day = date(2026, 12, 1)
    for each, status in ((store, 2), (other, 3)):
        await each.set_watched("config", [5], 1.0)
        await each.subscribe(-100, 5, None, 1, 1.0)
        await each.subscribe_project(-100, 12, 1, 1.0)
        await each.set_meta("feed.cursor", str(status))
        await each.quota_count(day, 0, on_demand=False, used_below=10, on_demand_cap=0)
        card = Card.of(replace(TASK, status=status))
        await each.save_polls([(TaskRecord(5, card=card), [EVENT])], [both(EVENT)], queued_at=1.0)
    await other.quota_count(day, 0, on_demand=False, used_below=10, on_demand_cap=0)
    await other.unsubscribe(-100, 5)
    assert (await store.watched_ids(), await other.watched_ids()) == ([5], [5])
    assert (
        await store.watched_ids("chat:-100") == [5] and await other.watched_ids("chat:-100") == []
    )
    assert [s.task_id for s in await store.subscriptions(-100)] == [5]
    assert await other.subscriptions(-100) == []
    assert await other.subscribed_projects(-100) == [12]
    assert (await store.get_meta("feed.cursor"), await other.get_meta("feed.cursor")) == ("2", "3")
    cards = await store.load_card(5), await other.load_card(5)
    assert [c.status if c else None for c in cards] == [2, 3]
    used = await store.load_quota(day), await other.load_quota(day)
    assert [u.used if u else None for u in used] == [1, 2]
    assert await store.versions() == (2, 1) and await other.versions() == (3, 1)
    assert len(await store.last_changes([5])) == len(await other.last_changes([5])) == 1
    assert (await store.outbox_counts())["pending"] == 4  # both accounts' deliveries


async def test_a_state_from_before_accounts_is_the_planfix_tables(backend: Backend) -> None:
    """An upgrade keeps everything: the rows written by one account's
    schema (SQLite 7, PostgreSQL 2) are the [planfix] account's ("")."""
    rows = [
        "INSERT INTO watched (task_id, source, added_at) VALUES (5, 'config', 1)",
        "INSERT INTO task_state (task_id, snapshot, polls) VALUES (5, '', 3)",
        "INSERT INTO quota (day, used) VALUES ('2026-12-01', 7)",
        "INSERT INTO subscriptions (chat_id, task_id, created_at) VALUES (-100, 5, 1)",
        "INSERT INTO project_subscriptions (chat_id, project_id, created_at) VALUES (-100, 12, 1)",
        "INSERT INTO events (task_id, kind, payload, created_at) VALUES (5, 'x', '{}', 1)",
    ]
    if backend.engine == "sqlite":
        db = sqlite3.connect(backend.path)
        for statement in [s for script in MIGRATIONS[:7] for s in script] + rows:
            db.execute(statement)
        db.execute("PRAGMA user_version=7")
        db.commit()
        db.close()
    else:
        with psycopg.connect(postgres.URL, autocommit=True) as conn:
            schema = sql.Identifier(backend.schema)
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            conn.execute(sql.SQL("SET search_path TO {}").format(schema))
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for statement in [s for script in POSTGRES_MIGRATIONS[:2] for s in script] + rows:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (1), (2)")
    store = backend.open()
    other = store.for_account("client2")
    assert await store.watched_ids() == [5] and await other.watched_ids() == []
    assert (await store.load_records([5]))[5].polls == 3
    assert (await other.load_records([5]))[5].polls == 0
    quota = await store.load_quota(date(2026, 12, 1))
    assert quota is not None and quota.used == 7
    assert await other.load_quota(date(2026, 12, 1)) is None
    assert [s.chat_id for s in await store.subscribers(5)] == [-100]
    assert await store.subscribed_projects() == [12] and await other.subscribed_projects() == []
    assert list(await store.last_changes([5])) == [5] and await other.last_changes([5]) == {}
    assert await store.schema_version() == (
        len(MIGRATIONS) if backend.engine == "sqlite" else len(POSTGRES_MIGRATIONS)
    )
