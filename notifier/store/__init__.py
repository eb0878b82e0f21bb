"""The state file: SQLite schema, migrations and queries (all SQL lives here)."""

from .lock import StateLock
from .sqlite import ChannelBacklog, OutboxItem, Store, StoreError, Subscription

__all__ = [
    "ChannelBacklog",
    "OutboxItem",
    "StateLock",
    "Store",
    "StoreError",
    "Subscription",
]
