"""The state: schema, migrations and queries (all SQL lives here), on SQLite
(the embedded default) or PostgreSQL (``state.url``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backend import StoreError
from .lock import StateLock
from .store import ChannelBacklog, OutboxItem, OutboxRow, Routes, Store, Subscription

if TYPE_CHECKING:
    from ..config import StateSection


def open_store(state: StateSection) -> Store:
    """The store ``[state]`` names. PostgreSQL connects on first use."""
    if state.url is None:
        return Store(state.path)
    from .postgres import PostgresDatabase

    url = state.url.get_secret_value()
    return Store(PostgresDatabase(url, state.db_schema, pool_size=state.pool_size))


def instance_lock(state: StateSection) -> StateLock | None:
    """What keeps a second service off a SQLite file: a lock beside it.
    None on PostgreSQL, where instances share the work by leases."""
    return StateLock(state.path) if state.url is None else None


__all__ = [
    "ChannelBacklog",
    "OutboxItem",
    "OutboxRow",
    "Routes",
    "StateLock",
    "Store",
    "StoreError",
    "Subscription",
    "instance_lock",
    "open_store",
]
