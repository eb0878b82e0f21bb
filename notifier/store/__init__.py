"""The state file: SQLite schema, migrations and queries (all SQL lives here)."""

from .lock import StateLock
from .sqlite import Store, StoreError, Subscription

__all__ = ["StateLock", "Store", "StoreError", "Subscription"]
