"""Every query of the service, written once for both engines (SQLite and
PostgreSQL: ``?`` placeholders, ``ON CONFLICT``, ``RETURNING``, no engine's
own functions). All SQL of the service lives in this package."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ..alerts.events import Event
from ..planfix.model import Task
from ..watch import state  # the module, not its names: watch.state imports the store
from ..watch.quota import LedgerDay
from . import codec
from .backend import Database, Row, Statements
from .sqlite import SqliteDatabase

Routes = Sequence[Sequence[tuple[str, str]]]  # per event: its (channel, recipient)s


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: int
    event: Event
    channel: str
    recipient: str
    attempts: int
    next_attempt_at: float
    created_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ChannelBacklog:
    """One channel's outbox at a glance, for the operator."""

    channel: str
    pending: int
    dead: int
    sent: int
    oldest_pending_at: float | None
    last_error: str | None  # of its latest failed attempt still pending or dead


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One delivery as the operator sees it."""

    id: int
    channel: str
    recipient: str
    state: str
    attempts: int
    last_error: str | None
    created_at: float
    next_attempt_at: float
    done_at: float | None
    event: Event


class Store:
    """Every query of the service, on SQLite or PostgreSQL (``database``).

    What belongs to a PlanFix account (its watch set, cards, quota days,
    chats' subscriptions, small facts) is read and written for one account,
    keyed ``account_key``: "" for the ``[planfix]`` table's, NAME for an
    ``[accounts.NAME]``'s (see :meth:`for_account`). The outbox, the events'
    ids and the leases are the whole state's."""

    def __init__(self, database: Database | Path | str, account_key: str = "") -> None:
        self._db: Database = (
            database if not isinstance(database, Path | str) else SqliteDatabase(database)
        )
        self.account_key = account_key
        self._pending_events: dict[str, dict[int, Event]] = {}  # see outbox_pending

    def for_account(self, account_key: str) -> Store:
        """The same state, seen by another account (the connection is shared:
        only the first store closes it); itself for its own account."""
        return self if account_key == self.account_key else Store(self._db, account_key)

    @property
    def where(self) -> str:
        return self._db.where

    @property
    def engine(self) -> str:
        return self._db.engine

    async def close(self) -> None:
        await self._db.close()

    async def check_writable(self) -> None:
        """Take the write lock and give it back, or say why not."""
        await self._db.check_writable()

    async def schema_version(self) -> int:
        return await self._db.schema_version()

    # --- the watch set --------------------------------------------------------------------

    async def set_watched(self, source: str, task_ids: Iterable[int], now: float) -> None:
        """Make ``source``'s watch set exactly ``task_ids`` (the config's, at start)."""
        wanted = set(task_ids)
        async with self._db.write() as db:
            rows = await db.fetchall(
                "SELECT task_id FROM watched WHERE account = ? AND source = ?",
                (self.account_key, source),
            )
            current = {row[0] for row in rows}
            await db.executemany(
                "DELETE FROM watched WHERE account = ? AND source = ? AND task_id = ?",
                [(self.account_key, source, t) for t in current - wanted],
            )
            await db.executemany(  # (another instance starting may write the same at once)
                _WATCH, [(self.account_key, t, source, now) for t in sorted(wanted - current)]
            )
            if wanted != current:
                await db.execute(_BUMP, (self._meta("watch.version"),))

    async def add_watched(self, task_id: int, source: str, now: float) -> None:
        async with self._db.write() as db:
            await db.execute(_WATCH, (self.account_key, task_id, source, now))
            await db.execute(_BUMP, (self._meta("watch.version"),))

    async def remove_watched(self, task_id: int, source: str) -> None:
        async with self._db.write() as db:
            await db.execute(
                "DELETE FROM watched WHERE account = ? AND task_id = ? AND source = ?",
                (self.account_key, task_id, source),
            )
            await db.execute(_BUMP, (self._meta("watch.version"),))

    async def versions(self) -> tuple[int, int]:
        """Numbers that grow with every change of the watch set, and of the
        chats' projects: the instance that polls follows another's /watch."""
        keys = self._meta("watch.version"), self._meta("projects.version")
        async with self._db.read() as db:
            rows = await db.fetchall("SELECT key, value FROM meta WHERE key IN (?, ?)", keys)
        found = {str(key): int(value) for key, value in rows}
        return found.get(keys[0], 0), found.get(keys[1], 0)

    async def watched_ids(self, source: str | None = None) -> list[int]:
        """Every watched task, or those one source (``config``, ``chat:…``) watches."""
        async with self._db.read() as db:
            if source is not None:
                rows = await db.fetchall(
                    "SELECT task_id FROM watched WHERE account = ? AND source = ? ORDER BY task_id",
                    (self.account_key, source),
                )
            else:
                rows = await db.fetchall(
                    "SELECT DISTINCT task_id FROM watched WHERE account = ? ORDER BY task_id",
                    (self.account_key,),
                )
        return [int(row[0]) for row in rows]

    async def watched_count(self) -> int:
        async with self._db.read() as db:
            row = await db.fetchone(
                "SELECT COUNT(DISTINCT task_id) FROM watched WHERE account = ?",
                (self.account_key,),
            )
        return int(row[0]) if row else 0

    # --- chats' subscriptions (the bot) ---------------------------------------------------

    async def subscribe(
        self,
        chat_id: int,
        task_id: int,
        events: Sequence[str] | None,
        user_id: int | None,
        now: float,
    ) -> None:
        """A chat watches a task (again: its events are replaced)."""
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO subscriptions "
                "(chat_id, account, task_id, events, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (chat_id, account, task_id) "
                "DO UPDATE SET events = excluded.events",
                (
                    chat_id,
                    self.account_key,
                    task_id,
                    json.dumps(list(events)) if events else None,
                    user_id,
                    now,
                ),
            )
            await db.execute(_WATCH, (self.account_key, task_id, f"chat:{chat_id}", now))
            await db.execute(_BUMP, (self._meta("watch.version"),))

    async def unsubscribe(self, chat_id: int, task_id: int) -> bool:
        async with self._db.write() as db:
            gone = await db.execute(
                "DELETE FROM subscriptions WHERE chat_id = ? AND account = ? AND task_id = ?",
                (chat_id, self.account_key, task_id),
            )
            await db.execute(
                "DELETE FROM watched WHERE account = ? AND task_id = ? AND source = ?",
                (self.account_key, task_id, f"chat:{chat_id}"),
            )
            await db.execute(_BUMP, (self._meta("watch.version"),))
        return bool(gone)

    async def subscriptions(self, chat_id: int | None = None) -> list[Subscription]:
        """A chat's subscriptions, or everyone's."""
        query = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE account = ?"  # noqa: S608
        async with self._db.read() as db:
            rows = (
                await db.fetchall(
                    query + " AND chat_id = ? ORDER BY task_id", (self.account_key, chat_id)
                )
                if chat_id is not None
                else await db.fetchall(query + " ORDER BY chat_id, task_id", (self.account_key,))
            )
        return [_subscription(row) for row in rows]

    async def subscribers(self, task_id: int) -> list[Subscription]:
        query = (
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions "  # noqa: S608 - a constant
            "WHERE account = ? AND task_id = ? ORDER BY created_at, chat_id"
        )
        async with self._db.read() as db:
            rows = await db.fetchall(query, (self.account_key, task_id))
        return [_subscription(row) for row in rows]

    async def subscribe_project(
        self, chat_id: int, project_id: int, created_by: int | None, now: float
    ) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO project_subscriptions (chat_id, account, project_id, created_by, "
                "created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (chat_id, self.account_key, project_id, created_by, now),
            )
            await db.execute(_BUMP, (self._meta("projects.version"),))

    async def unsubscribe_project(self, chat_id: int, project_id: int) -> bool:
        async with self._db.write() as db:
            done = await db.execute(
                "DELETE FROM project_subscriptions "
                "WHERE chat_id = ? AND account = ? AND project_id = ?",
                (chat_id, self.account_key, project_id),
            )
            await db.execute(_BUMP, (self._meta("projects.version"),))
        return done > 0

    async def subscribed_projects(self, chat_id: int | None = None) -> list[int]:
        """Projects some chat (or this one) watches, each once."""
        query = "SELECT DISTINCT project_id FROM project_subscriptions WHERE account = ?"
        async with self._db.read() as db:
            rows = (
                await db.fetchall(
                    f"{query} AND chat_id = ? ORDER BY project_id", (self.account_key, chat_id)
                )
                if chat_id is not None
                else await db.fetchall(f"{query} ORDER BY project_id", (self.account_key,))
            )
        return [int(row[0]) for row in rows]

    async def project_subscribers(self, project_id: int) -> list[Subscription]:
        """The chats watching a project, as subscriptions to its every task."""
        async with self._db.read() as db:
            rows = await db.fetchall(
                "SELECT chat_id, created_by FROM project_subscriptions "
                "WHERE account = ? AND project_id = ? ORDER BY created_at, chat_id",
                (self.account_key, project_id),
            )
        return [Subscription(int(chat), 0, None, by, None) for chat, by in rows]

    async def mute(self, chat_id: int, task_id: int | None, until: float | None) -> int:
        """Mute one task (or, with None, every task) for a chat; None unmutes."""
        async with self._db.write() as db:
            if task_id is None:
                return await db.execute(
                    "UPDATE subscriptions SET muted_until = ? WHERE chat_id = ? AND account = ?",
                    (until, chat_id, self.account_key),
                )
            return await db.execute(
                "UPDATE subscriptions SET muted_until = ? "
                "WHERE chat_id = ? AND account = ? AND task_id = ?",
                (until, chat_id, self.account_key, task_id),
            )

    # --- task records ------------------------------------------------------------------

    async def load_records(self, task_ids: Iterable[int]) -> dict[int, state.TaskRecord]:
        """The records of these tasks; a fresh one for a task never polled."""
        records = {task_id: state.TaskRecord(task_id) for task_id in task_ids}
        query = f"SELECT {_RECORD_COLUMNS} FROM task_state WHERE account = ?"  # noqa: S608
        async with self._db.read() as db:
            if len(records) <= 1000:  # a few (a page of the status page): by key
                by_key = query + " AND task_id IN ({})"
                for row in await _rows_for(db, by_key, list(records), before=(self.account_key,)):
                    records[row[0]] = _record(row)
                return records
            # Many (the start): one scan, a row at a time. Each holds a card's
            # text, read only to make its digest: 50,000 of them at once were
            # 90 MB that the allocator kept.
            async for row in db.stream(query, (self.account_key,)):
                if row[0] in records:
                    records[row[0]] = _record(row)
        return records

    async def load_cards(self, task_ids: Sequence[int]) -> dict[int, Task]:
        """The last good cards of these tasks, as read from PlanFix (none before the baseline)."""
        sql = (
            "SELECT task_id, snapshot FROM task_state "
            "WHERE account = ? AND task_id IN ({}) AND snapshot != ''"
        )
        async with self._db.read() as db:
            rows = await _rows_for(db, sql, task_ids, before=(self.account_key,))
        return {task_id: codec.load_task(text) for task_id, text in rows}

    async def load_card(self, task_id: int) -> Task | None:
        return (await self.load_cards([task_id])).get(task_id)

    async def save_polls(
        self,
        polled: Sequence[tuple[state.TaskRecord, Sequence[Event]]],
        routes: Routes | None = None,
        due_at: float | None = None,
        *,
        queued_at: float,
    ) -> list[tuple[int, Event]]:
        """Tasks' new states, the events they raised and the deliveries those
        need (``routes``: each event's (channel, recipient)s), in one
        transaction: a crash leaves all or none, so nothing is raised twice
        and no alert is lost."""
        async with self._db.write() as db:
            await db.executemany(
                f"INSERT INTO task_state (account, {_RECORD_COLUMNS}) "  # noqa: S608 - constants
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT (account, task_id) DO UPDATE SET {_RECORD_UPDATE}",
                [(self.account_key, *_record_row(record)) for record, _ in polled],
            )
            events = [event for _, batch in polled for event in batch]
            return await _insert_events(db, self.account_key, events, routes, due_at, queued_at)

    # --- events ----------------------------------------------------------------------

    async def add_events(
        self,
        events: Sequence[Event],
        routes: Routes | None = None,
        due_at: float | None = None,
        *,
        queued_at: float,
    ) -> list[tuple[int, Event]]:
        async with self._db.write() as db:
            return await _insert_events(db, self.account_key, events, routes, due_at, queued_at)

    # --- the outbox ------------------------------------------------------------------

    async def outbox_pending(self, channel: str) -> list[OutboxRow]:
        """Every pending delivery of a channel, oldest first. An event is
        never changed once stored: those read for the channel's last call are
        not read again (a backlog of thousands is read at every pass)."""
        known = self._pending_events.get(channel, {})
        async with self._db.read() as db:
            rows = await db.fetchall(
                "SELECT id, event_id, channel, recipient, attempts, next_attempt_at, "
                "created_at, last_error FROM outbox "
                "WHERE channel = ? AND state = 'pending' ORDER BY id",
                (channel,),
            )
            wanted = {int(r[1]) for r in rows}
            sql = "SELECT id, payload FROM events WHERE id IN ({})"
            payloads = await _rows_for(db, sql, sorted(wanted - known.keys()))
        events = {i: known[i] for i in wanted & known.keys()}
        events.update((int(i), codec.load_event(payload)) for i, payload in payloads)
        self._pending_events[channel] = events  # (only the pending: the cache stays that size)
        return [  # (an event gone meanwhile: its delivery was done and pruned)
            OutboxRow(r[0], r[1], event, r[2], r[3], r[4], r[5], r[6], r[7])
            for r in rows
            if (event := events.get(int(r[1]))) is not None
        ]

    async def outbox_still_pending(
        self, ids: Sequence[int]
    ) -> dict[int, tuple[float, int, str | None]]:
        """Of these deliveries, those still pending: when each is due, its
        attempts and its last error."""
        sql = (
            "SELECT id, next_attempt_at, attempts, last_error FROM outbox "
            "WHERE state = 'pending' AND id IN ({})"
        )
        async with self._db.read() as db:
            rows = await _rows_for(db, sql, ids)
        return {int(r[0]): (float(r[1]), int(r[2]), r[3]) for r in rows}

    async def outbox_sent(self, ids: Sequence[int], now: float) -> None:
        await self._outbox_update("state = 'sent', done_at = ?, last_error = NULL", (now,), ids)

    async def outbox_retry(
        self, ids: Sequence[int], next_at: float, error: str | None, *, attempt: bool = True
    ) -> None:
        """Try again at ``next_at``; ``attempt=False`` for a wait that is not a
        failure (quiet hours)."""
        step = 1 if attempt else 0
        await self._outbox_update(
            "next_attempt_at = ?, attempts = attempts + ?, last_error = COALESCE(?, last_error)",
            (next_at, step, error),
            ids,
        )

    async def outbox_due_now(self, channels: Sequence[str], now: float) -> None:
        """Pending deliveries of these channels are due at once (a reload fixed them)."""
        async with self._db.write() as db:
            await db.executemany(
                "UPDATE outbox SET next_attempt_at = ? "
                "WHERE state = 'pending' AND channel = ? AND next_attempt_at > ?",
                [(now, channel, now) for channel in channels],
            )

    async def outbox_shift(self, step: float) -> None:
        """The wall clock stepped: pending deliveries keep their age (for
        ``max_age_s``). After a step back their waits shrink with it (else a
        10-minute step would hold them 10 minutes); after a step forward the
        waits simply end sooner, and quiet hours keep their wall-clock end."""
        async with self._db.write() as db:
            await db.execute(
                "UPDATE outbox SET created_at = created_at + ?, next_attempt_at = "
                "next_attempt_at + ? WHERE state = 'pending'",
                (step, min(step, 0.0)),
            )

    async def outbox_dead(self, ids: Sequence[int], reason: str, now: float) -> None:
        await self._outbox_update(
            "state = 'dead', done_at = ?, last_error = ?, attempts = attempts + 1",
            (now, reason),
            ids,
        )

    async def _outbox_update(
        self, assignments: str, values: tuple[object, ...], ids: Sequence[int]
    ) -> None:
        if not ids:
            return
        async with self._db.write() as db:
            await db.executemany(
                f"UPDATE outbox SET {assignments} WHERE id = ?",  # noqa: S608 - constants
                [(*values, row_id) for row_id in ids],
            )

    async def outbox_oldest_undelivered(self, now: float) -> float | None:
        """When the oldest delivery that should have gone by now was queued:
        one tried and failed, or due; not one held back unattempted (quiet hours)."""
        async with self._db.read() as db:
            row = await db.fetchone(
                "SELECT MIN(created_at) FROM outbox WHERE state = 'pending' "
                "AND (attempts > 0 OR next_attempt_at <= ?)",
                (now,),
            )
        return None if row is None or row[0] is None else float(row[0])

    async def outbox_counts(self) -> dict[str, int]:
        async with self._db.read() as db:
            rows = await db.fetchall("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {str(state): int(count) for state, count in rows}

    async def dead_letters(self, limit: int = 20) -> list[tuple[str, str, str, float]]:
        """(channel, recipient, reason, when) of the latest dead letters."""
        async with self._db.read() as db:
            rows = await db.fetchall(
                "SELECT channel, recipient, COALESCE(last_error, ''), done_at FROM outbox "
                "WHERE state = 'dead' ORDER BY done_at DESC LIMIT ?",
                (limit,),
            )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def events_after(self, event_id: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        async with self._db.read() as db:
            rows = await db.fetchall(
                "SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (event_id, limit),
            )
        return [(int(row[0]), codec.load_event(row[1])) for row in rows]

    # --- the operator's view --------------------------------------------------------------

    async def outbox_by_channel(self) -> list[ChannelBacklog]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        async with self._db.read() as db:
            by_state = await db.fetchall(
                "SELECT channel, state, COUNT(*), MIN(created_at) FROM outbox "
                "GROUP BY channel, state"
            )
            latest_errors = await db.fetchall(
                "SELECT o.channel, o.last_error FROM outbox o JOIN (SELECT MAX(id) AS id "
                "FROM outbox WHERE state != 'sent' AND last_error IS NOT NULL GROUP BY channel) "
                "latest ON o.id = latest.id"
            )
        for channel, row_state, count, first in by_state:
            counts.setdefault(channel, {})[row_state] = int(count)
            if row_state == "pending":
                oldest[channel] = first
        errors = {str(channel): str(error) for channel, error in latest_errors}
        return [
            ChannelBacklog(
                channel=channel,
                pending=by.get("pending", 0),
                dead=by.get("dead", 0),
                sent=by.get("sent", 0),
                oldest_pending_at=oldest.get(channel),
                last_error=errors.get(channel),
            )
            for channel, by in sorted(counts.items())
        ]

    async def outbox_items(self, item_state: str, limit: int = 50) -> list[OutboxItem]:
        """Pending deliveries, oldest first; dead letters, latest first."""
        order = "o.id" if item_state == "pending" else "o.done_at DESC, o.id DESC"
        sql = (
            "SELECT o.id, o.channel, o.recipient, o.state, o.attempts, o.last_error, "
            "o.created_at, o.next_attempt_at, o.done_at, e.payload "
            "FROM outbox o JOIN events e ON e.id = o.event_id "
            "WHERE o.state = ? ORDER BY {} LIMIT ?"
        )
        async with self._db.read() as db:
            rows = await db.fetchall(sql.format(order), (item_state, limit))
        return [
            OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], codec.load_event(r[9]))
            for r in rows
        ]

    async def outbox_revive(self, outbox_id: int, now: float) -> bool:
        """A dead letter goes out again at once, with fresh attempts; False
        when there is no such dead letter."""
        async with self._db.write() as db:
            changed = await db.execute(
                "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                "created_at = ?, done_at = NULL, last_error = NULL WHERE id = ? AND state = 'dead'",
                (now, now, outbox_id),
            )
        return changed == 1

    async def outbox_channel(self, outbox_id: int) -> str | None:
        async with self._db.read() as db:
            row = await db.fetchone("SELECT channel FROM outbox WHERE id = ?", (outbox_id,))
        return None if row is None else str(row[0])

    async def recent_events(
        self, limit: int = 20
    ) -> list[tuple[int, Event, list[tuple[str, str]]]]:
        """The latest events, each with its deliveries: (channel, state)."""
        deliveries: dict[int, list[tuple[str, str]]] = {}
        async with self._db.read() as db:
            events = await db.fetchall(
                "SELECT id, payload FROM events ORDER BY id DESC LIMIT ?", (limit,)
            )
            if events:
                for event_id, channel, row_state in await db.fetchall(
                    "SELECT event_id, channel, state FROM outbox WHERE event_id >= ? ORDER BY id",
                    (events[-1][0],),
                ):
                    deliveries.setdefault(event_id, []).append((channel, row_state))
        return [(i, codec.load_event(p), deliveries.get(i, [])) for i, p in events]

    async def last_changes(self, task_ids: Sequence[int]) -> dict[int, float]:
        """When an event was last raised for each of these tasks."""
        sql = (
            "SELECT task_id, MAX(created_at) FROM events "
            "WHERE account = ? AND task_id IN ({}) GROUP BY task_id"
        )
        async with self._db.read() as db:
            rows = await _rows_for(db, sql, task_ids, before=(self.account_key,))
        return {task_id: at for task_id, at in rows}

    async def watch_sources(self, task_ids: Sequence[int]) -> dict[int, list[str]]:
        """Why each of these tasks is watched: its sources (``config``, ``chat:…``)."""
        found: dict[int, list[str]] = {}
        sql = (
            "SELECT task_id, source FROM watched "
            "WHERE account = ? AND task_id IN ({}) ORDER BY source"
        )
        async with self._db.read() as db:
            for task_id, source in await _rows_for(db, sql, task_ids, before=(self.account_key,)):
                found.setdefault(task_id, []).append(source)
        return found

    # --- small facts kept between runs ------------------------------------------------------

    def _meta(self, key: str) -> str:
        """The account's own key: "" keeps the keys of the one-account schema."""
        return f"{self.account_key}/{key}" if self.account_key else key

    async def get_meta(self, key: str) -> str | None:
        async with self._db.read() as db:
            row = await db.fetchone("SELECT value FROM meta WHERE key = ?", (self._meta(key),))
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._meta(key), value),
            )

    # --- the quota ledger -----------------------------------------------------------------

    async def load_quota(self, day: date) -> LedgerDay | None:
        async with self._db.read() as db:
            row = await db.fetchone(
                "SELECT used, server_remaining, used_at_server, exhausted, on_demand, hours "
                "FROM quota WHERE account = ? AND day = ?",
                (self.account_key, day.isoformat()),
            )
        return None if row is None else _ledger_day(day, row)

    async def save_quota(self, row: LedgerDay) -> None:
        async with self._db.write() as db:
            await db.execute(
                "INSERT INTO quota (account, day, used, server_remaining, used_at_server, "
                "exhausted, on_demand, hours) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account, day) DO UPDATE SET "
                "used = excluded.used, server_remaining = excluded.server_remaining, "
                "used_at_server = excluded.used_at_server, exhausted = excluded.exhausted, "
                "on_demand = excluded.on_demand, hours = excluded.hours",
                (
                    self.account_key,
                    row.day.isoformat(),
                    row.used,
                    row.server_remaining,
                    row.used_at_server,
                    int(row.exhausted),
                    row.on_demand,
                    _hours(row),
                ),
            )

    async def quota_count(
        self, day: date, hour: int, *, on_demand: bool, used_below: int, on_demand_cap: int
    ) -> LedgerDay | None:
        """Count one request, atomically (instances together never exceed the
        budget): only while the day's count is below ``used_below``, nothing
        said "exhausted", and an on-demand one within ``on_demand_cap``. The
        day as counted, or None when refused."""
        async with self._db.write() as db:
            row = await db.fetchone(
                "INSERT INTO quota (account, day, used, on_demand) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (account, day) DO UPDATE SET used = quota.used + 1, "
                "on_demand = quota.on_demand + excluded.on_demand "
                "WHERE quota.used < ? AND quota.exhausted = 0 "
                "AND (excluded.on_demand = 0 OR quota.on_demand < ?) "
                "RETURNING used, server_remaining, used_at_server, exhausted, on_demand, hours",
                (self.account_key, day.isoformat(), int(on_demand), used_below, on_demand_cap),
            )
            if row is None:
                return None
            counted = _ledger_day(day, row)
            counted.hours[hour] += 1  # (the row is this transaction's until it ends)
            await db.execute(
                "UPDATE quota SET hours = ? WHERE account = ? AND day = ?",
                (_hours(counted), self.account_key, day.isoformat()),
            )
        return counted

    async def quota_advice(self, row: LedgerDay, *, unblock: bool = False) -> None:
        """What PlanFix said of the day (its remaining count, an exhausted
        quota: kept, whoever writes next, until ``unblock``), leaving the
        count to quota_count."""
        exhausted = "?" if unblock else "CASE WHEN ? = 1 THEN 1 ELSE exhausted END"
        async with self._db.write() as db:
            await db.execute(
                "UPDATE quota SET server_remaining = ?, used_at_server = ?, "  # noqa: S608
                f"exhausted = {exhausted} WHERE account = ? AND day = ?",
                (
                    row.server_remaining,
                    row.used_at_server,
                    int(row.exhausted),
                    self.account_key,
                    row.day.isoformat(),
                ),
            )

    # --- leases: which instance does what (PostgreSQL's several instances) ---------------

    async def lease_take(self, name: str, holder: str, now: float, lease_s: float) -> float | None:
        """Take the lease, or renew it when ``holder`` has it, in one statement
        (two instances asking at once: one gets it). Since when ``holder``
        holds it; None while another holds it unexpired."""
        async with self._db.write() as db:
            row = await db.fetchone(
                "INSERT INTO leases (name, holder, since, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "since = CASE WHEN leases.holder = excluded.holder THEN leases.since "
                "ELSE excluded.since END, expires = excluded.expires "
                "WHERE leases.holder = excluded.holder OR leases.expires < ? RETURNING since",
                (name, holder, now, now + lease_s, now),
            )
        return None if row is None else float(row[0])

    async def lease_renew(
        self, names: Sequence[str], holder: str, now: float, lease_s: float
    ) -> list[str]:
        """Renew these leases of ``holder``'s, in one statement each 500;
        those renewed (one taken over by another after it expired is not)."""
        sql = "UPDATE leases SET expires = ? WHERE holder = ? AND name IN ({}) RETURNING name"
        async with self._db.write() as db:
            rows = await _rows_for(db, sql, names, before=(now + lease_s, holder))
        return [str(row[0]) for row in rows]

    async def lease_give_back(self, names: Sequence[str], holder: str) -> None:
        async with self._db.write() as db:
            await db.executemany(
                "DELETE FROM leases WHERE name = ? AND holder = ?", [(n, holder) for n in names]
            )

    async def leases_alive(self, prefix: str, now: float) -> list[str]:
        """The holders of the unexpired leases named ``prefix…``; the expired
        ones (an instance gone: its name is never used again) removed."""
        async with self._db.write() as db:
            await db.execute(
                "DELETE FROM leases WHERE substr(name, 1, ?) = ? AND expires < ?",
                (len(prefix), prefix, now),
            )
            rows = await db.fetchall(
                "SELECT holder FROM leases WHERE substr(name, 1, ?) = ? ORDER BY holder",
                (len(prefix), prefix),
            )
        return [str(row[0]) for row in rows]

    async def leases(self, prefix: str = "") -> list[tuple[str, str, float, float]]:
        """(name, holder, since, expires) of every lease whose name starts so."""
        async with self._db.read() as db:
            rows = await db.fetchall(
                "SELECT name, holder, since, expires FROM leases "
                "WHERE substr(name, 1, ?) = ? ORDER BY name",
                (len(prefix), prefix),
            )
        return [(str(r[0]), str(r[1]), float(r[2]), float(r[3])) for r in rows]


_BUMP = (  # a version in meta grows by one
    "INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) "
    "DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"
)
_WATCH = (
    "INSERT INTO watched (account, task_id, source, added_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)


async def _insert_events(
    db: Statements,
    account: str,
    events: Sequence[Event],
    routes: Routes | None,
    due_at: float | None,
    queued_at: float,
) -> list[tuple[int, Event]]:
    """The events and their deliveries. A delivery's age (what a channel's
    ``max_age_s`` measures) counts from ``queued_at``, when it was queued,
    not from when PlanFix changed the task: a change found after days of
    downtime is still delivered."""
    stored = []
    first_attempt = queued_at if due_at is None else due_at
    for index, event in enumerate(events):
        row = await db.fetchone(
            "INSERT INTO events (account, task_id, kind, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (account, event.task_id, event.kind.value, codec.dumps(event), event.at.timestamp()),
        )
        assert row is not None  # RETURNING gives the row inserted
        event_id = int(row[0])
        stored.append((event_id, event))
        if routes is not None:
            await db.executemany(
                "INSERT INTO outbox (event_id, channel, recipient, next_attempt_at, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [
                    (event_id, channel, recipient, first_attempt, queued_at)
                    for channel, recipient in routes[index]
                ],
            )
    return stored


def _ledger_day(day: date, row: Row) -> LedgerDay:
    hours = json.loads(row[5]) if row[5] else [0] * 24  # a day counted before schema 6
    return LedgerDay(day, row[0], row[1], row[2], bool(row[3]), row[4], hours)


def _hours(row: LedgerDay) -> str:
    return json.dumps(row.hours, separators=(",", ":"))


async def _rows_for(
    db: Statements, sql: str, keys: Sequence[object], before: tuple[object, ...] = ()
) -> list[Row]:
    """``sql``'s rows, its ``{}`` the keys' placeholders (after the values
    ``before``), 500 keys at a time."""
    rows: list[Row] = []
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows += await db.fetchall(sql.format(",".join("?" * len(chunk))), (*before, *chunk))
    return rows


@dataclass(frozen=True, slots=True)
class Subscription:
    chat_id: int
    task_id: int
    events: tuple[str, ...] | None  # None: the configured default
    created_by: int | None
    muted_until: float | None


_SUBSCRIPTION_COLUMNS = "chat_id, task_id, events, created_by, muted_until"


def _subscription(row: tuple[Any, ...]) -> Subscription:
    events = tuple(json.loads(row[2])) if row[2] else None
    return Subscription(int(row[0]), int(row[1]), events, row[3], row[4])


_RECORD_COLUMNS = (
    "task_id, snapshot, last_poll_at, last_ok_at, last_result, last_error, failures, "
    "unavailable, changes, observed_s, polls, reminded_at"
)


# A card kept (not read anew: the poll failed) comes without its text: the
# stored one stays (NULL); a record with no card clears it ('', read as none).
_RECORD_UPDATE = ", ".join(
    "snapshot = COALESCE(excluded.snapshot, task_state.snapshot)" if column == "snapshot"
    else f"{column} = excluded.{column}"
    for column in _RECORD_COLUMNS.split(", ")[1:]
)  # fmt: skip


def _record_row(record: state.TaskRecord) -> tuple[object, ...]:
    return (
        record.task_id,
        record.card.text if record.card else "",
        record.last_poll_at,
        record.last_ok_at,
        record.last_result,
        record.last_error,
        record.failures,
        int(record.unavailable),
        record.changes,
        record.observed_s,
        record.polls,
        record.reminded_at,
    )


def _record(row: tuple[Any, ...]) -> state.TaskRecord:
    return state.TaskRecord(
        task_id=int(row[0]),
        card=state.Card.load(str(row[1])) if row[1] else None,
        last_poll_at=row[2],
        last_ok_at=row[3],
        last_result=row[4],
        last_error=row[5],
        failures=int(row[6]),
        unavailable=bool(row[7]),
        changes=float(row[8]),
        observed_s=float(row[9]),
        polls=int(row[10]),
        reminded_at=row[11],
    )
