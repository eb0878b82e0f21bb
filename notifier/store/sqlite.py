"""The state file: SQLite in WAL mode, readable by its owner only.

All SQL of the service lives in this package. The schema is versioned with
``PRAGMA user_version``; a file from a newer version is refused before
anything is written to it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from ..alerts.events import Event
from ..planfix.model import Task
from ..watch import state  # the module, not its names: watch.state imports the store
from ..watch.quota import LedgerDay
from . import codec
from .migrations import MIGRATIONS

Route = Callable[[Event], Sequence[tuple[str, str]]]  # event → (channel, recipient)…


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


class StoreError(Exception):
    """The state file cannot be used; the text says why and what to do."""


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = self._open()

    # --- opening ------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Created 0600 before SQLite touches it; SQLite gives the -wal
                # and -shm files the same mode.
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                os.close(fd)
                os.chmod(self.path, 0o600)
            except OSError as exc:
                raise StoreError(
                    f"state file {self.path}: cannot open it ({exc.strerror}); state.path "
                    "must be a file in a folder this user can write"
                ) from None
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"state file {self.path}: not a usable SQLite database ({exc})"
            ) from None
        latest = len(MIGRATIONS)
        if version > latest:
            db.close()
            raise StoreError(
                f"state file {self.path} has schema version {version}, written by a newer "
                f"planfix-notifier (this one knows up to {latest}); upgrade, or set state.path "
                "to another file. The file was not changed."
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with _transaction(db):
                for statement in script:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")
        return db

    def close(self) -> None:
        self._db.close()

    def check_writable(self) -> None:
        """Take the write lock and give it back, or say why not."""
        try:
            with _transaction(self._db):
                self._db.execute("UPDATE quota SET used = used WHERE 0")
        except sqlite3.Error as exc:
            raise StoreError(f"state file {self.path}: cannot write ({exc})") from None

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # --- the watch set --------------------------------------------------------------------

    def set_watched(self, source: str, task_ids: Iterable[int], now: float) -> None:
        """Make ``source``'s watch set exactly ``task_ids`` (the config's, at start)."""
        wanted = set(task_ids)
        with _transaction(self._db):
            current = {
                row[0]
                for row in self._db.execute(
                    "SELECT task_id FROM watched WHERE source = ?", (source,)
                )
            }
            self._db.executemany(
                "DELETE FROM watched WHERE source = ? AND task_id = ?",
                [(source, t) for t in current - wanted],
            )
            self._db.executemany(
                "INSERT INTO watched (task_id, source, added_at) VALUES (?, ?, ?)",
                [(t, source, now) for t in sorted(wanted - current)],
            )

    def add_watched(self, task_id: int, source: str, now: float) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO watched (task_id, source, added_at) VALUES (?, ?, ?)",
            (task_id, source, now),
        )

    def remove_watched(self, task_id: int, source: str) -> None:
        self._db.execute("DELETE FROM watched WHERE task_id = ? AND source = ?", (task_id, source))

    def watched_ids(self, source: str | None = None) -> list[int]:
        """Every watched task, or those one source (``config``, ``chat:…``) watches."""
        if source is not None:
            rows = self._db.execute(
                "SELECT task_id FROM watched WHERE source = ? ORDER BY task_id", (source,)
            )
        else:
            rows = self._db.execute("SELECT DISTINCT task_id FROM watched ORDER BY task_id")
        return [row[0] for row in rows]

    # --- chats' subscriptions (the bot) ---------------------------------------------------

    def subscribe(
        self,
        chat_id: int,
        task_id: int,
        events: Sequence[str] | None,
        user_id: int | None,
        now: float,
    ) -> None:
        """A chat watches a task (again: its events are replaced)."""
        with _transaction(self._db):
            self._db.execute(
                "INSERT INTO subscriptions (chat_id, task_id, events, created_by, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (chat_id, task_id) DO UPDATE SET "
                "events = excluded.events",
                (chat_id, task_id, json.dumps(list(events)) if events else None, user_id, now),
            )
            self._db.execute(
                "INSERT OR IGNORE INTO watched (task_id, source, added_at) VALUES (?, ?, ?)",
                (task_id, f"chat:{chat_id}", now),
            )

    def unsubscribe(self, chat_id: int, task_id: int) -> bool:
        with _transaction(self._db):
            gone = self._db.execute(
                "DELETE FROM subscriptions WHERE chat_id = ? AND task_id = ?", (chat_id, task_id)
            ).rowcount
            self._db.execute(
                "DELETE FROM watched WHERE task_id = ? AND source = ?", (task_id, f"chat:{chat_id}")
            )
        return bool(gone)

    def subscriptions(self, chat_id: int | None = None) -> list[Subscription]:
        """A chat's subscriptions, or everyone's."""
        query = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions"  # noqa: S608 - a constant
        rows = (
            self._db.execute(query + " WHERE chat_id = ? ORDER BY task_id", (chat_id,))
            if chat_id is not None
            else self._db.execute(query + " ORDER BY chat_id, task_id")
        )
        return [_subscription(row) for row in rows]

    def subscribers(self, task_id: int) -> list[Subscription]:
        query = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE task_id = ?"  # noqa: S608
        return [_subscription(row) for row in self._db.execute(query, (task_id,))]

    def subscribe_project(
        self, chat_id: int, project_id: int, created_by: int | None, now: float
    ) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO project_subscriptions (chat_id, project_id, created_by, "
            "created_at) VALUES (?, ?, ?, ?)",
            (chat_id, project_id, created_by, now),
        )

    def unsubscribe_project(self, chat_id: int, project_id: int) -> bool:
        done = self._db.execute(
            "DELETE FROM project_subscriptions WHERE chat_id = ? AND project_id = ?",
            (chat_id, project_id),
        )
        return done.rowcount > 0

    def subscribed_projects(self, chat_id: int | None = None) -> list[int]:
        """Projects some chat (or this one) watches, each once."""
        query = "SELECT DISTINCT project_id FROM project_subscriptions"
        rows = (
            self._db.execute(f"{query} WHERE chat_id = ? ORDER BY project_id", (chat_id,))
            if chat_id is not None
            else self._db.execute(f"{query} ORDER BY project_id")
        )
        return [int(row[0]) for row in rows]

    def project_subscribers(self, project_id: int) -> list[Subscription]:
        """The chats watching a project, as subscriptions to its every task."""
        rows = self._db.execute(
            "SELECT chat_id, created_by FROM project_subscriptions WHERE project_id = ?",
            (project_id,),
        )
        return [Subscription(int(chat), 0, None, by, None) for chat, by in rows]

    def mute(self, chat_id: int, task_id: int | None, until: float | None) -> int:
        """Mute one task (or, with None, every task) for a chat; None unmutes."""
        with _transaction(self._db):
            if task_id is None:
                cursor = self._db.execute(
                    "UPDATE subscriptions SET muted_until = ? WHERE chat_id = ?", (until, chat_id)
                )
            else:
                cursor = self._db.execute(
                    "UPDATE subscriptions SET muted_until = ? WHERE chat_id = ? AND task_id = ?",
                    (until, chat_id, task_id),
                )
        return int(cursor.rowcount)

    # --- task records ------------------------------------------------------------------

    def load_records(self, task_ids: Iterable[int]) -> dict[int, state.TaskRecord]:
        """The records of these tasks; a fresh one for a task never polled."""
        records = {task_id: state.TaskRecord(task_id) for task_id in task_ids}
        query = f"SELECT {_RECORD_COLUMNS} FROM task_state"  # noqa: S608 - a constant
        # A few (a page of the status page): by key; many (the start): one scan.
        rows = (
            self._rows_for(query + " WHERE task_id IN ({})", list(records))
            if len(records) <= 1000
            else self._db.execute(query)
        )
        for row in rows:
            if row[0] in records:
                records[row[0]] = _record(row)
        return records

    def load_cards(self, task_ids: Sequence[int]) -> dict[int, Task]:
        """The last good cards of these tasks, as read from PlanFix (none before the baseline)."""
        sql = "SELECT task_id, snapshot FROM task_state WHERE task_id IN ({}) AND snapshot != ''"
        return {task_id: codec.load_task(text) for task_id, text in self._rows_for(sql, task_ids)}

    def load_card(self, task_id: int) -> Task | None:
        return self.load_cards([task_id]).get(task_id)

    def save_polls(
        self,
        polled: Sequence[tuple[state.TaskRecord, Sequence[Event]]],
        route: Route | None = None,
        due_at: float | None = None,
        *,
        queued_at: float,
    ) -> list[tuple[int, Event]]:
        """Tasks' new states, the events they raised and the deliveries those
        need, in one transaction: a crash leaves all or none, so nothing is
        raised twice and no alert is lost."""
        with _transaction(self._db):
            self._db.executemany(
                f"INSERT INTO task_state ({_RECORD_COLUMNS}) "  # noqa: S608 - constants
                f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
                f"{_RECORD_UPDATE}",
                [_record_row(record) for record, _ in polled],
            )
            events = [event for _, batch in polled for event in batch]
            return self._insert_events(events, route, due_at, queued_at)

    # --- events ----------------------------------------------------------------------

    def add_events(
        self,
        events: Sequence[Event],
        route: Route | None = None,
        due_at: float | None = None,
        *,
        queued_at: float,
    ) -> list[tuple[int, Event]]:
        with _transaction(self._db):
            return self._insert_events(events, route, due_at, queued_at)

    def _insert_events(
        self,
        events: Sequence[Event],
        route: Route | None,
        due_at: float | None,
        queued_at: float,
    ) -> list[tuple[int, Event]]:
        """The events and their deliveries. A delivery's age (what a channel's
        ``max_age_s`` measures) counts from ``queued_at``, when it was queued,
        not from when PlanFix changed the task: a change found after days of
        downtime is still delivered."""
        stored = []
        first_attempt = queued_at if due_at is None else due_at
        for event in events:
            cursor = self._db.execute(
                "INSERT INTO events (task_id, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                (event.task_id, event.kind.value, codec.dumps(event), event.at.timestamp()),
            )
            event_id = int(cursor.lastrowid or 0)
            stored.append((event_id, event))
            if route is not None:
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox "
                    "(event_id, channel, recipient, next_attempt_at, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (event_id, channel, recipient, first_attempt, queued_at)
                        for channel, recipient in route(event)
                    ],
                )
        return stored

    # --- the outbox ------------------------------------------------------------------

    def outbox_pending(self, channel: str) -> list[OutboxRow]:
        """Every pending delivery of a channel, oldest first."""
        rows = self._db.execute(
            "SELECT o.id, o.event_id, e.payload, o.channel, o.recipient, o.attempts, "
            "o.next_attempt_at, o.created_at, o.last_error "
            "FROM outbox o JOIN events e ON e.id = o.event_id "
            "WHERE o.channel = ? AND o.state = 'pending' ORDER BY o.id",
            (channel,),
        )
        return [
            OutboxRow(r[0], r[1], codec.load_event(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
            for r in rows
        ]

    def outbox_sent(self, ids: Sequence[int], now: float) -> None:
        self._outbox_update("state = 'sent', done_at = ?, last_error = NULL", (now,), ids)

    def outbox_retry(
        self, ids: Sequence[int], next_at: float, error: str | None, *, attempt: bool = True
    ) -> None:
        """Try again at ``next_at``; ``attempt=False`` for a wait that is not a
        failure (quiet hours)."""
        step = 1 if attempt else 0
        self._outbox_update(
            "next_attempt_at = ?, attempts = attempts + ?, last_error = COALESCE(?, last_error)",
            (next_at, step, error),
            ids,
        )

    def outbox_due_now(self, channels: Sequence[str], now: float) -> None:
        """Pending deliveries of these channels are due at once (a reload fixed them)."""
        with _transaction(self._db):
            self._db.executemany(
                "UPDATE outbox SET next_attempt_at = MIN(next_attempt_at, ?) "
                "WHERE state = 'pending' AND channel = ?",
                [(now, channel) for channel in channels],
            )

    def outbox_shift(self, step: float) -> None:
        """The wall clock stepped: pending deliveries keep their age (for
        ``max_age_s``). After a step back their waits shrink with it (else a
        10-minute step would hold them 10 minutes); after a step forward the
        waits simply end sooner, and quiet hours keep their wall-clock end."""
        with _transaction(self._db):
            self._db.execute(
                "UPDATE outbox SET created_at = created_at + ?, next_attempt_at = "
                "next_attempt_at + ? WHERE state = 'pending'",
                (step, min(step, 0.0)),
            )

    def outbox_dead(self, ids: Sequence[int], reason: str, now: float) -> None:
        self._outbox_update(
            "state = 'dead', done_at = ?, last_error = ?, attempts = attempts + 1",
            (now, reason),
            ids,
        )

    def _outbox_update(
        self, assignments: str, values: tuple[object, ...], ids: Sequence[int]
    ) -> None:
        if not ids:
            return
        with _transaction(self._db):
            self._db.executemany(
                f"UPDATE outbox SET {assignments} WHERE id = ?",  # noqa: S608 - constants
                [(*values, row_id) for row_id in ids],
            )

    def outbox_oldest_undelivered(self, now: float) -> float | None:
        """When the oldest delivery that should have gone by now was queued:
        one tried and failed, or due; not one held back unattempted (quiet hours)."""
        row = self._db.execute(
            "SELECT MIN(created_at) FROM outbox WHERE state = 'pending' "
            "AND (attempts > 0 OR next_attempt_at <= ?)",
            (now,),
        )
        return row.fetchone()[0]  # type: ignore[no-any-return]

    def outbox_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {state: count for state, count in rows}

    def dead_letters(self, limit: int = 20) -> list[tuple[str, str, str, float]]:
        """(channel, recipient, reason, when) of the latest dead letters."""
        rows = self._db.execute(
            "SELECT channel, recipient, COALESCE(last_error, ''), done_at FROM outbox "
            "WHERE state = 'dead' ORDER BY done_at DESC LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def events_after(self, event_id: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        rows = self._db.execute(
            "SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit)
        )
        return [(row[0], codec.load_event(row[1])) for row in rows]

    # --- the operator's view --------------------------------------------------------------

    def outbox_by_channel(self) -> list[ChannelBacklog]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for channel, row_state, count, first in self._db.execute(
            "SELECT channel, state, COUNT(*), MIN(created_at) FROM outbox GROUP BY channel, state"
        ):
            counts.setdefault(channel, {})[row_state] = count
            if row_state == "pending":
                oldest[channel] = first
        errors = dict(
            self._db.execute(
                "SELECT o.channel, o.last_error FROM outbox o JOIN (SELECT MAX(id) AS id "
                "FROM outbox WHERE state != 'sent' AND last_error IS NOT NULL GROUP BY channel) "
                "latest ON o.id = latest.id"
            ).fetchall()
        )
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

    def outbox_items(self, item_state: str, limit: int = 50) -> list[OutboxItem]:
        """Pending deliveries, oldest first; dead letters, latest first."""
        order = "o.id" if item_state == "pending" else "o.done_at DESC, o.id DESC"
        sql = (
            "SELECT o.id, o.channel, o.recipient, o.state, o.attempts, o.last_error, "
            "o.created_at, o.next_attempt_at, o.done_at, e.payload "
            "FROM outbox o JOIN events e ON e.id = o.event_id "
            "WHERE o.state = ? ORDER BY {} LIMIT ?"
        )
        rows = self._db.execute(sql.format(order), (item_state, limit))
        return [
            OutboxItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], codec.load_event(r[9]))
            for r in rows
        ]

    def outbox_revive(self, outbox_id: int, now: float) -> bool:
        """A dead letter goes out again at once, with fresh attempts; False
        when there is no such dead letter."""
        cursor = self._db.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, "
            "created_at = ?, done_at = NULL, last_error = NULL WHERE id = ? AND state = 'dead'",
            (now, now, outbox_id),
        )
        return cursor.rowcount == 1

    def outbox_channel(self, outbox_id: int) -> str | None:
        row = self._db.execute("SELECT channel FROM outbox WHERE id = ?", (outbox_id,)).fetchone()
        return None if row is None else str(row[0])

    def recent_events(self, limit: int = 20) -> list[tuple[int, Event, list[tuple[str, str]]]]:
        """The latest events, each with its deliveries: (channel, state)."""
        events = self._db.execute(
            "SELECT id, payload FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        deliveries: dict[int, list[tuple[str, str]]] = {}
        if events:
            for event_id, channel, row_state in self._db.execute(
                "SELECT event_id, channel, state FROM outbox WHERE event_id >= ? ORDER BY id",
                (events[-1][0],),
            ):
                deliveries.setdefault(event_id, []).append((channel, row_state))
        return [(i, codec.load_event(p), deliveries.get(i, [])) for i, p in events]

    def last_changes(self, task_ids: Sequence[int]) -> dict[int, float]:
        """When an event was last raised for each of these tasks."""
        sql = "SELECT task_id, MAX(created_at) FROM events WHERE task_id IN ({}) GROUP BY task_id"
        return {task_id: at for task_id, at in self._rows_for(sql, task_ids)}

    def watch_sources(self, task_ids: Sequence[int]) -> dict[int, list[str]]:
        """Why each of these tasks is watched: its sources (``config``, ``chat:…``)."""
        found: dict[int, list[str]] = {}
        sql = "SELECT task_id, source FROM watched WHERE task_id IN ({}) ORDER BY source"
        for task_id, source in self._rows_for(sql, task_ids):
            found.setdefault(task_id, []).append(source)
        return found

    def _rows_for(self, sql: str, task_ids: Sequence[int]) -> Iterator[tuple[Any, ...]]:
        """``sql``'s rows, its ``{}`` the ids' placeholders, 500 ids at a time."""
        for start in range(0, len(task_ids), 500):
            chunk = task_ids[start : start + 500]
            yield from self._db.execute(sql.format(",".join("?" * len(chunk))), chunk)

    # --- small facts kept between runs ------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- the quota ledger -----------------------------------------------------------------

    def load_quota(self, day: date) -> LedgerDay | None:
        row = self._db.execute(
            "SELECT used, server_remaining, used_at_server, exhausted, on_demand, hours "
            "FROM quota WHERE day = ?",
            (day.isoformat(),),
        ).fetchone()
        if row is None:
            return None
        hours = json.loads(row[5]) if row[5] else [0] * 24  # a day counted before schema 6
        return LedgerDay(day, row[0], row[1], row[2], bool(row[3]), row[4], hours)

    def save_quota(self, row: LedgerDay) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO quota "
            "(day, used, server_remaining, used_at_server, exhausted, on_demand, hours) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.day.isoformat(),
                row.used,
                row.server_remaining,
                row.used_at_server,
                int(row.exhausted),
                row.on_demand,
                json.dumps(row.hours, separators=(",", ":")),
            ),
        )


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
    "snapshot = COALESCE(excluded.snapshot, snapshot)" if column == "snapshot"
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


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT (a full disk) may leave it open
            db.execute("ROLLBACK")
        raise
