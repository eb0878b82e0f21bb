"""The schema, one list of statements per version. Append; never edit a
released version (files in the field were made by it)."""

from __future__ import annotations

_LEASES = """CREATE TABLE leases (
    name TEXT PRIMARY KEY,             -- poll:<account> | bot | lane:<channel>…
    holder TEXT NOT NULL,              -- the instance: host, pid and a random tag
    since {time} NOT NULL,             -- held without a break since (epoch seconds)
    expires {time} NOT NULL            -- unless renewed by then
)"""


def _rebuilt(table: str, columns: str, key: str, first: str = "") -> list[str]:
    """SQLite cannot change a primary key: the table made again with an
    ``account`` column ("" for every row it had) heading its key (after
    ``first``, the chat, where a chat's rows are read together)."""
    names = ", ".join(column.split()[0] for column in columns.split(", "))
    head = f"{first}, account" if first else "account"
    return [
        f"CREATE TABLE {table}_new (account TEXT NOT NULL DEFAULT '', {columns}, "
        f"PRIMARY KEY ({head}, {key}))",
        f"INSERT INTO {table}_new ({names}) SELECT {names} FROM {table}",  # noqa: S608
        f"DROP TABLE {table}",
        f"ALTER TABLE {table}_new RENAME TO {table}",
    ]


def _keyed_by_account(table: str, key: str) -> list[str]:
    """PostgreSQL's way to the same: a column, and the key (``key``, the
    account in it) made again."""
    return [
        f"ALTER TABLE {table} ADD COLUMN account TEXT NOT NULL DEFAULT ''",
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
        f"ALTER TABLE {table} ADD PRIMARY KEY ({key})",
    ]


_EVENTS_BY_ACCOUNT = [
    "ALTER TABLE events ADD COLUMN account TEXT NOT NULL DEFAULT ''",
    "DROP INDEX events_task",
    "CREATE INDEX events_task ON events (account, task_id, id)",
]

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
    # 7: leases (PostgreSQL's several instances: who polls, who runs the bot,
    # who sends to a recipient)
    [_LEASES.format(time="REAL")],
    # 8: several PlanFix accounts ([accounts.NAME]): what is an account's is
    # keyed by it too; "" is the [planfix] table's (every row until now)
    [
        *_rebuilt(
            "watched",
            "task_id INTEGER NOT NULL, source TEXT NOT NULL, added_at REAL NOT NULL",
            "task_id, source",
        ),
        *_rebuilt(
            "task_state",
            "task_id INTEGER NOT NULL, snapshot TEXT, last_poll_at REAL, last_ok_at REAL, "
            "last_result TEXT, last_error TEXT, failures INTEGER NOT NULL DEFAULT 0, "
            "unavailable INTEGER NOT NULL DEFAULT 0, changes REAL NOT NULL DEFAULT 0, "
            "observed_s REAL NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0, "
            "reminded_at REAL",
            "task_id",
        ),
        *_rebuilt(
            "quota",
            "day TEXT NOT NULL, used INTEGER NOT NULL, server_remaining INTEGER, "
            "used_at_server INTEGER NOT NULL DEFAULT 0, exhausted INTEGER NOT NULL DEFAULT 0, "
            "on_demand INTEGER NOT NULL DEFAULT 0, hours TEXT",
            "day",
        ),
        *_rebuilt(
            "subscriptions",
            "chat_id INTEGER NOT NULL, task_id INTEGER NOT NULL, events TEXT, "
            "created_by INTEGER, created_at REAL NOT NULL, muted_until REAL",
            "task_id",
            first="chat_id",
        ),
        *_rebuilt(
            "project_subscriptions",
            "chat_id INTEGER NOT NULL, project_id INTEGER NOT NULL, created_by INTEGER, "
            "created_at REAL NOT NULL",
            "project_id",
            first="chat_id",
        ),
        *_EVENTS_BY_ACCOUNT,
    ],
]


# PostgreSQL's schema: the same tables and columns (the queries are shared),
# with its own types: 64-bit ids (Telegram chat ids do not fit in 32 bits),
# DOUBLE PRECISION for times (its REAL is 32-bit: seconds would be lost).
# Its versions start at the SQLite schema of version 6. Append; never edit.
POSTGRES_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE watched (
            task_id BIGINT NOT NULL,
            source TEXT NOT NULL,
            added_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (task_id, source)
        )""",
        """CREATE TABLE task_state (
            task_id BIGINT PRIMARY KEY,
            snapshot TEXT,
            last_poll_at DOUBLE PRECISION,
            last_ok_at DOUBLE PRECISION,
            last_result TEXT,
            last_error TEXT,
            failures INTEGER NOT NULL DEFAULT 0,
            unavailable INTEGER NOT NULL DEFAULT 0,
            changes DOUBLE PRECISION NOT NULL DEFAULT 0,
            observed_s DOUBLE PRECISION NOT NULL DEFAULT 0,
            polls BIGINT NOT NULL DEFAULT 0,
            reminded_at DOUBLE PRECISION
        )""",
        """CREATE TABLE quota (
            day TEXT PRIMARY KEY,
            used INTEGER NOT NULL,
            server_remaining INTEGER,
            used_at_server INTEGER NOT NULL DEFAULT 0,
            exhausted INTEGER NOT NULL DEFAULT 0,
            on_demand INTEGER NOT NULL DEFAULT 0,
            hours TEXT
        )""",
        """CREATE TABLE events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            task_id BIGINT,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL
        )""",
        "CREATE INDEX events_task ON events (task_id, id)",
        """CREATE TABLE outbox (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            event_id BIGINT NOT NULL REFERENCES events (id),
            channel TEXT NOT NULL,
            recipient TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            last_error TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            done_at DOUBLE PRECISION,
            UNIQUE (event_id, channel, recipient)
        )""",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
        """CREATE TABLE subscriptions (
            chat_id BIGINT NOT NULL,
            task_id BIGINT NOT NULL,
            events TEXT,
            created_by BIGINT,
            created_at DOUBLE PRECISION NOT NULL,
            muted_until DOUBLE PRECISION,
            PRIMARY KEY (chat_id, task_id)
        )""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE project_subscriptions (
            chat_id BIGINT NOT NULL,
            project_id BIGINT NOT NULL,
            created_by BIGINT,
            created_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (chat_id, project_id)
        )""",
    ],
    # 2: as SQLite's 7
    [_LEASES.format(time="DOUBLE PRECISION")],
    # 3: as SQLite's 8
    [
        *_keyed_by_account("watched", "account, task_id, source"),
        *_keyed_by_account("task_state", "account, task_id"),
        *_keyed_by_account("quota", "account, day"),
        *_keyed_by_account("subscriptions", "chat_id, account, task_id"),
        *_keyed_by_account("project_subscriptions", "chat_id, account, project_id"),
        *_EVENTS_BY_ACCOUNT,
    ],
]
