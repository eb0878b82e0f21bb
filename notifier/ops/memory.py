"""Giving freed memory back to the system.

The poller replaces as many small objects as it frees (a card, its planner
entries), so Python's own count stays flat; but glibc keeps the freed pages
of its heap for later, and the process's RSS creeps up to a high-water mark.
``malloc_trim`` returns what is free at the top of each heap and in whole
free pages inside it. It costs a few milliseconds at 50,000 tasks, so it runs
with the gauges, not on every poll. Elsewhere (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _malloc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):
        trim = None
    if trim is None:
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def give_back() -> None:
        trim(0)

    return give_back


give_back = _malloc_trim()
