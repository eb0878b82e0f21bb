"""The state file: SQLite schema, migrations and queries (all SQL lives here)."""

from .sqlite import Store, StoreError, Subscription

__all__ = ["Store", "StoreError", "Subscription"]
