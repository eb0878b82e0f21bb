"""State in PostgreSQL, for more than one machine: psycopg 3's async API
and a small pool.

The schema lives in its own PostgreSQL schema (``state.schema``), made on
first use, versioned in its ``schema_version`` table and migrated under an
advisory lock, so instances starting together migrate it once. psycopg is
imported only here, and only when a ``state.url`` asks for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..ops import logging as oplog
from .backend import Row, StoreError
from .migrations import POSTGRES_MIGRATIONS

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

log = oplog.get(__name__)

MIGRATION_LOCK = 0x706C616E666978  # pg_advisory_xact_lock key while migrating ("planfix")
CONNECT_TIMEOUT_S = 10.0


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The shared queries' ``?`` as psycopg's ``%s`` (none of them holds a literal ? or %)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Statements:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        cursor = await self._conn.execute(_placeholders(sql), params)
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(_placeholders(sql), list(rows))

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        cursor = await self._conn.execute(_placeholders(sql), params)
        return await cursor.fetchall()

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        cursor = await self._conn.execute(_placeholders(sql), params)
        return await cursor.fetchone()

    async def stream(self, sql: str, params: Sequence[object] = ()) -> AsyncIterator[Row]:
        async for row in self._conn.cursor().stream(_placeholders(sql), params):
            yield row


def describe(url: str, schema: str) -> str:
    """Where the state is, for the operator: host, port, database, never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return f"PostgreSQL (an unreadable state.url; schema {schema})"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    database = parts.get("dbname") or parts.get("user") or ""
    return f"PostgreSQL {host}:{port}/{database} (schema {schema})"


class PostgresDatabase:
    engine = "postgresql"

    def __init__(self, url: str, schema: str = "planfix_notifier", *, pool_size: int = 4) -> None:
        try:
            import psycopg  # noqa: F401 - only to say what is missing
            from psycopg_pool import AsyncConnectionPool
        except ImportError:
            raise StoreError(
                "state.url names PostgreSQL, but psycopg is not installed: "
                "pip install 'planfix-notifier[postgresql]'"
            ) from None
        self.url, self.schema = url, schema
        self.where = describe(url, schema)
        self._pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, **KEEPALIVES},
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,  # a server restart: reconnect, not fail
            timeout=CONNECT_TIMEOUT_S,
            name="planfix-notifier",
        )
        self._ready = False
        self._opening = asyncio.Lock()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        from psycopg import sql

        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def _open(self) -> None:
        if self._ready:
            return
        async with self._opening:
            if self._ready:
                return
            import psycopg

            # One connection first: a server that refuses is said at once (the
            # pool would retry it until its timeout), and the schema is made.
            with self._failures("cannot connect"):
                conn = await psycopg.AsyncConnection.connect(self.url, **KEEPALIVES)
            try:
                with self._failures("cannot prepare the schema"):
                    await self._migrate(conn)
            finally:
                await conn.close()
            await self._pool.open()
            self._ready = True

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        from psycopg import sql

        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            schema = sql.Identifier(self.schema)
            found = await conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            )
            if await found.fetchone() is None:  # (a role may own a schema, not the database)
                await conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = await (await conn.execute("SELECT MAX(version) FROM schema_version")).fetchone()
            version = int(row[0] or 0) if row else 0
            latest = len(POSTGRES_MIGRATIONS)
            if version > latest:
                raise StoreError(
                    f"{self.where} has schema version {version}, written by a newer "
                    f"planfix-notifier (this one knows up to {latest}); upgrade, or set "
                    "state.schema to another schema. Nothing was changed."
                )
            for number, script in enumerate(POSTGRES_MIGRATIONS[version:], start=version + 1):
                for statement in script:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))

    @contextmanager
    def _failures(self, doing: str = "") -> Iterator[None]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            yield
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            cause = _said(exc, self.url)
            raise StoreError(f"{self.where}: {doing + ': ' if doing else ''}{cause}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[_Statements]:
        await self._open()
        with self._failures():
            async with self._pool.connection() as conn, conn.transaction():
                yield _Statements(conn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_Statements]:
        await self._open()
        with self._failures():
            async with self._pool.connection() as conn:
                yield _Statements(conn)

    async def schema_version(self) -> int:
        async with self.read() as db:
            row = await db.fetchone("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0

    async def check_writable(self) -> None:
        try:
            async with self.write() as db:
                await db.execute("UPDATE quota SET used = used WHERE false")
        except StoreError as exc:
            raise StoreError(f"{exc} (cannot write)") from None

    async def close(self) -> None:
        await self._pool.close()


KEEPALIVES: dict[str, Any] = {
    "connect_timeout": int(CONNECT_TIMEOUT_S),
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms: data unacknowledged this long ends the connection
}
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}


def _said(exc: BaseException, url: str) -> str:
    """The first line of what psycopg (libpq) said, which names the host and
    the cause; the password taken out (libpq quotes a malformed address)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    for secret in url_password(url):
        line = line.replace(secret, "***")
    return line


def url_password(url: str) -> list[str]:
    """The password inside a database address, as written and decoded."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []
