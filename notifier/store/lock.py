"""One service per SQLite state: ``run`` holds an exclusive lock for as long
as it runs. Two instances on one file would send every alert twice and
under-count the quota. It is a lock on a file beside the state file; the
kernel drops it when the process dies, however it dies, so a stale lock
cannot outlive its holder. (On PostgreSQL several instances share the work
by leases: ops/leases.py.)"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from .backend import StoreError


def lock_path(state: Path) -> Path:
    return state.with_name(state.name + ".lock")


class StateLock:
    def __init__(self, state: Path | str) -> None:
        self.state = Path(state)
        self.path = lock_path(self.state)
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    async def take(self) -> None:
        self.acquire()

    async def give_back(self) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, or raise StoreError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"state lock {self.path}: cannot create it ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"state {self.state} is in use by another planfix-notifier "
                f"(PID {holder}, lock {self.path}); stop it first, or give this one its own "
                "[state] path"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
