"""The seam between the store's queries and a database engine.

The queries (store.py) are written once, in the SQL both engines speak, with
``?`` placeholders; a backend runs them on SQLite (sqlite.py) or PostgreSQL
(postgres.py). A backend turns its engine's errors into :class:`StoreError`,
so that the service handles one kind of failure whatever holds its state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = tuple[Any, ...]


class StoreError(Exception):
    """The state cannot be used; the text says why and what to do."""


class Statements(Protocol):
    """Statements run on one connection (inside a transaction when written)."""

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    def stream(self, sql: str, params: Sequence[object] = ()) -> AsyncIterator[Row]:
        """The rows one at a time, never all in memory (50,000 cards at start)."""
        ...


class Database(Protocol):
    where: str  # what the operator reads: "state file …", "PostgreSQL host:port/db (schema …)"
    engine: str  # sqlite | postgresql

    def write(self) -> AbstractAsyncContextManager[Statements]:
        """One transaction: all of it or nothing."""
        ...

    def read(self) -> AbstractAsyncContextManager[Statements]:
        """Reads that need no transaction of their own."""
        ...

    async def schema_version(self) -> int: ...

    async def check_writable(self) -> None:
        """Take the write lock and give it back, or raise StoreError saying why not."""
        ...

    async def close(self) -> None: ...
