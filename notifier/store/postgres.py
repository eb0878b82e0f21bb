"""State in PostgreSQL, for more than one machine: psycopg 3's async API
and a small pool.

The schema lives in its own PostgreSQL schema (``state.schema``), made on
first use, versioned in its ``schema_version`` table and migrated under an
advisory lock, so instances starting together migrate it once. psycopg is
imported only here, and only when a ``state.url`` asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
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


class AdvisoryLock:
    """One service per PostgreSQL schema: a session advisory lock, held on a
    connection of its own for as long as the service runs. PostgreSQL drops
    it when that session ends: the process killed, or its host gone (TCP
    keepalives on both ends notice a dead peer within about 30 s)."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.where = describe(url, schema)
        digest = hashlib.blake2b(f"planfix-notifier:{schema}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big", signed=True)
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def take(self, *, standby: Callable[[str], None] | None = None) -> None:
        """Take the lock. Held by another instance: raise StoreError naming it,
        or, with ``standby``, tell it who holds the lock (once) and wait for
        the lock: this instance takes over as soon as that one's session ends.
        A standby that loses PostgreSQL meanwhile connects again and waits on."""
        import psycopg

        told = False
        while True:
            try:
                conn = await self._connect()
            except StoreError as exc:
                if standby is None or not told:
                    raise  # (a first connection that fails is said at once)
                log.warning("standby: PostgreSQL does not answer; trying again", error=str(exc))
                await asyncio.sleep(STANDBY_POLL_S)
                continue
            try:
                while not await self._try(conn):
                    holder = await self._holder(conn)
                    if standby is None:
                        raise StoreError(
                            f"{self.where} is in use by another planfix-notifier ({holder}); "
                            "stop it first, or give this one its own state.schema"
                        )
                    if not told:
                        standby(holder)
                        told = True
                    await asyncio.sleep(STANDBY_POLL_S)
            except psycopg.Error as exc:  # the session ended while standing by
                await conn.close()
                if standby is None:
                    raise StoreError(f"{self.where}: {_said(exc, self.url)}") from None
                continue
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
            return

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        name = f"planfix-notifier {socket.gethostname()} pid {os.getpid()}"[:63]
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name=name, **KEEPALIVES
            )
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect: {_said(exc, self.url)}") from None
        try:
            for setting, value in SERVER_KEEPALIVES.items():  # the server notices a dead host
                await conn.execute(f"SET {setting} = {value}")
        except psycopg.Error as exc:
            await conn.close()
            raise StoreError(f"{self.where}: {_said(exc, self.url)}") from None
        return conn

    async def _try(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        row = await cursor.fetchone()
        return bool(row and row[0])

    async def _holder(self, conn: psycopg.AsyncConnection[Any]) -> str:
        classid, objid = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        cursor = await conn.execute(
            "SELECT a.application_name, a.client_addr::text, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 1",
            (classid, objid),
        )
        row = await cursor.fetchone()
        if row is None:
            return "holder unknown"
        since = f"{row[2]:%Y-%m-%d %H:%M:%S %Z}" if row[2] else "?"
        return f"{row[0] or 'no name'} from {row[1] or 'a local socket'}, since {since}"

    async def lost(self) -> str:
        """Returns when the lock's session has ended (PostgreSQL restarted, the
        network cut): another instance may hold the lock by now."""
        import psycopg

        while True:
            await asyncio.sleep(LOCK_CHECK_S)
            conn = self._conn
            if conn is None:
                return "the lock was given back"
            try:
                # (a query unanswered in a network cut waits on no keepalive)
                await asyncio.wait_for(conn.execute("SELECT 1"), LOCK_CHECK_S * 2)
            except (psycopg.Error, TimeoutError) as exc:
                said = _said(exc, self.url)
                return f"{self.where}: the session holding the lock ended ({said})"

    async def give_back(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()  # the session's end lets go of the lock


LOCK_CHECK_S = 5.0
STANDBY_POLL_S = 2.0  # a standby asks for the lock this often: takeover within 2 s of its release
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
