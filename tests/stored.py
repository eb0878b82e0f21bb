"""What a state file holds, read from a test that runs no event loop of its
own (one that drives the service as a process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from notifier.store import Store

T = TypeVar("T")


def stored(path: Path, read: Callable[[Store], Awaitable[T]]) -> T:
    async def reading() -> T:
        store = Store(path)
        try:
            return await read(store)
        finally:
            await store.close()

    return asyncio.run(reading())
