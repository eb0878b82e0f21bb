"""The embedded default: one SQLite file in WAL mode, readable by its owner only.

The schema is versioned with ``PRAGMA user_version``; a file from a newer
version is refused before anything is written to it. The driver is
synchronous and local: a statement takes microseconds, so it runs on the
event loop (a thread per call would cost more than the call). A write
transaction never waits on anything else, so two never interleave; the lock
makes sure of it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from .backend import Row, StoreError
from .migrations import MIGRATIONS


class _Statements:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._db.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._db.execute(sql, params).fetchall()

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        row: Row | None = self._db.execute(sql, params).fetchone()
        return row

    async def stream(self, sql: str, params: Sequence[object] = ()) -> AsyncIterator[Row]:
        for row in self._db.execute(sql, params):
            yield row


class SqliteDatabase:
    engine = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.where = f"state file {self.path}"
        self._db = self._open()
        self._statements = _Statements(self._db)
        self._writing = asyncio.Lock()

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

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Statements]:
        async with self._writing:
            with self._failures(), _transaction(self._db):
                yield self._statements

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Statements]:
        with self._failures():
            yield self._statements

    @contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"{self.where}: {exc}") from exc

    async def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    async def check_writable(self) -> None:
        try:
            with _transaction(self._db):
                self._db.execute("UPDATE quota SET used = used WHERE 0")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.where}: cannot write ({exc})") from None

    async def close(self) -> None:
        self._db.close()


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
