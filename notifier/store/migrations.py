"""The schema, one list of statements per version. Append; never edit a
released version (files in the field were made by it)."""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: the first schema
    [
        """CREATE TABLE watched (
            task_id INTEGER NOT NULL,
            source TEXT NOT NULL,          -- 'config', or 'chat:<id>' for a subscription
            added_at REAL NOT NULL,
            PRIMARY KEY (task_id, source)
        )""",
        """CREATE TABLE task_state (
            task_id INTEGER PRIMARY KEY,
            snapshot TEXT,                 -- the last good card as JSON; NULL before the baseline
            last_poll_at REAL,             -- epoch seconds
            last_ok_at REAL,
            last_result TEXT,              -- ok | error | unavailable
            last_error TEXT,
            failures INTEGER NOT NULL DEFAULT 0,
            unavailable INTEGER NOT NULL DEFAULT 0,
            changes REAL NOT NULL DEFAULT 0,
            observed_s REAL NOT NULL DEFAULT 0,
            polls INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE quota (
            day TEXT PRIMARY KEY,          -- the quota day, in the account's zone
            used INTEGER NOT NULL,
            server_remaining INTEGER,
            used_at_server INTEGER NOT NULL DEFAULT 0,
            exhausted INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id INTEGER,               -- NULL for the operator's events
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX events_task ON events (task_id, id)",
        """CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id INTEGER NOT NULL REFERENCES events (id),
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | dead
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            last_error TEXT,
            created_at REAL NOT NULL,
            done_at REAL,
            UNIQUE (event_id, channel, recipient)
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
        """CREATE TABLE subscriptions (
            chat_id INTEGER NOT NULL,
            task_id INTEGER NOT NULL,
            events TEXT,                   -- JSON list, NULL = the configured default
            created_by INTEGER,
            created_at REAL NOT NULL,
            muted_until REAL,
            PRIMARY KEY (chat_id, task_id)
        )""",
    ],
    # 2: when a still-overdue task was last told (alerts.repeat_overdue_every)
    ["ALTER TABLE task_state ADD COLUMN reminded_at REAL"],
    # 3: requests spent on demand (poll, /watch, pushes), capped at the reserve
    ["ALTER TABLE quota ADD COLUMN on_demand INTEGER NOT NULL DEFAULT 0"],
    # 4: small facts the service keeps between runs (the change feed's cursor and mode)
    ["CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"],
    # 5: chats that watch a whole project through the bot (/watch project 12)
    [
        """CREATE TABLE project_subscriptions (
            chat_id INTEGER NOT NULL,
            project_id INTEGER NOT NULL,
            created_by INTEGER,
            created_at REAL NOT NULL,
            PRIMARY KEY (chat_id, project_id)
        )"""
    ],
    # 6: requests per hour of the quota day, for the status page's burn-down
    ["ALTER TABLE quota ADD COLUMN hours TEXT"],
]
