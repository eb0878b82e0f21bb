"""A sliding-window limiter: at most ``limit`` acquisitions in any ``period``.

Stricter than a leaky bucket (which lets a burst through and then trickles),
so it keeps within a limit however the other side counts it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable


class SlidingWindow:
    def __init__(
        self,
        limit: int,
        period_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self.sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                while self._sent and self._sent[0] <= now - self.period_s:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await self.sleep(self._sent[0] + self.period_s - now)
