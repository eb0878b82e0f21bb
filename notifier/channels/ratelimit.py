"""Pacing for a limit the other side counts by arrival: at least ``gap_s``
between two messages and, optionally, at most ``limit`` in any ``period_s``.

We never know when a message arrived, only that it was after we began to send
it and before its answer came back. So each turn counts from when the
previous send *finished*: then no delay on the way (a busy machine, a slow
network) can bring two arrivals closer than the limit, and a small margin
covers the other side's clock. (Counting from when a send began let a message
held up on the way arrive less than a second before the next: a 429, and a
pause of up to a minute.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

MARGIN_S = 0.05


class Pacer:
    def __init__(
        self,
        gap_s: float,
        limit: int | None = None,
        period_s: float = 0.0,
        *,
        margin_s: float = MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.gap_s, self.limit, self.period_s, self.margin_s = gap_s, limit, period_s, margin_s
        self.clock, self.sleep = clock, sleep
        self._done: deque[float] = deque(maxlen=max(limit or 1, 1))  # when sends finished
        self._lock = asyncio.Lock()

    def ready_at(self) -> float:
        """The earliest moment the next send may begin."""
        if not self._done:
            return -float("inf")
        ready = self._done[-1] + self.gap_s + self.margin_s
        if self.limit is not None and len(self._done) >= self.limit:
            ready = max(ready, self._done[0] + self.period_s + self.margin_s)
        return ready

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a turn, send inside it; it ends when the answer is in
        (or the send failed: it may have arrived all the same)."""
        async with self._lock:
            while (wait := self.ready_at() - self.clock()) > 0:
                await self.sleep(wait)
            try:
                yield
            finally:
                self._done.append(self.clock())
