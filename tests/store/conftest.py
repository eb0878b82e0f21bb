"""Every store test runs on both backends: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from notifier.store import Store
from notifier.store.postgres import PostgresDatabase
from tests import postgres


class Backend:
    """Opens stores on one state: SQLite's file, or PostgreSQL's schema."""

    def __init__(self, engine: str, tmp_path: Path, schema: str) -> None:
        self.engine, self.path, self.schema = engine, tmp_path / "state.sqlite3", schema
        self.opened: list[Store] = []

    def open(self) -> Store:
        if self.engine == "sqlite":
            store = Store(self.path)
        else:
            store = Store(PostgresDatabase(postgres.URL, self.schema, pool_size=2))
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path, "")
        return
    if (why := postgres.reachable()) is not None:
        pytest.fail(why)
    with postgres.fresh_schema() as schema:
        yield Backend("postgresql", tmp_path, schema)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = backend.open()
    yield opened
    for each in backend.opened:
        await each.close()
