"""The daily request ledger — the client's :class:`RequestGate`.

Every request counts (log-ins and failures too); the count is kept per quota
day in the store, so it survives restarts; the day ends at midnight in the
configured zone. ``X-RateLimit-Remaining`` is advice: PlanFix refreshes it
only about every ten minutes, so it caps our count only until the next probe,
``SERVER_ADVICE_S`` after it was seen (and never across a restart). Error 0007
is PlanFix's word: it pauses everything until the reset. Requests are paced
to ``requests_per_second``. A reserve (default 5 %) is kept for on-demand
polls; it is held in proportion to what is left of the day, so that by
midnight the planner has spent it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from ..ops.clock import steady
from ..planfix.client import RequestRecord
from ..planfix.errors import ErrorClass, PlanfixApiError, QuotaExhaustedError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

SERVER_ADVICE_S = 600.0  # how long one X-RateLimit-Remaining is taken as a cap

_on_demand: contextvars.ContextVar[bool] = contextvars.ContextVar("on_demand", default=False)


def day_bounds(now: float, tz: ZoneInfo) -> tuple[date, float]:
    """The quota day ``now`` falls in, and when it ends (epoch seconds)."""
    local = datetime.fromtimestamp(now, tz)
    tomorrow = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tz)
    return local.date(), tomorrow.timestamp()


def reserve_now(daily_quota: int, reserve_fraction: float, seconds_left: float) -> int:
    """The part of the reserve still held back: all of it at midnight, none by the end."""
    share = max(0.0, min(1.0, seconds_left / 86400.0))
    return int(daily_quota * reserve_fraction * share + 0.999)


@dataclass
class LedgerDay:
    """One quota day's count, as the store keeps it."""

    day: date
    used: int = 0
    server_remaining: int | None = None  # the last X-RateLimit-Remaining seen…
    used_at_server: int = 0  # …and our count when we saw it
    exhausted: bool = False  # 0007 seen: nothing more today
    on_demand: int = 0  # of `used`, spent on demand (capped at the reserve)
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # `used` by local hour


class LedgerStore(Protocol):
    """What the ledger needs of the store."""

    async def load_quota(self, day: date) -> LedgerDay | None: ...

    async def quota_count(
        self, day: date, hour: int, *, on_demand: bool, used_below: int, on_demand_cap: int
    ) -> LedgerDay | None: ...

    async def quota_advice(self, row: LedgerDay, *, unblock: bool = False) -> None: ...


class QuotaLedger:
    def __init__(
        self,
        store: LedgerStore,
        *,
        daily_quota: int,
        timezone: str,
        requests_per_second: float = 1.0,
        reserve_fraction: float = 0.05,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_exhausted: Callable[[float], None] | None = None,
        observe: Callable[[RequestRecord], None] | None = None,
        monotonic: Clock = steady,
    ) -> None:
        self.store = store
        self.daily_quota = daily_quota
        self.tz = ZoneInfo(timezone)
        self.min_gap = 1.0 / requests_per_second
        self.reserve_fraction = reserve_fraction
        self.clock = clock  # the quota day, and what a person reads
        self.monotonic = monotonic  # pacing and the age of advice: a wall-clock step moves neither
        self.sleep = sleep
        self.on_exhausted = on_exhausted
        self.observe = observe  # metrics
        self._row: LedgerDay | None = None
        self._last_sent: float | None = None  # on the monotonic clock, as are these:
        self._pace_lock = asyncio.Lock()
        self._saving = asyncio.Lock()  # one write of the row at a time: the last is the latest
        self._recent: deque[float] = deque()  # send times within the last hour
        self._advice_at: float | None = None  # when this process last saw the header

    # --- the day's figures --------------------------------------------------------------

    async def load(self) -> LedgerDay:
        """Today's row as stored (at start: what earlier runs spent)."""
        day, _ = day_bounds(self.clock(), self.tz)
        self._row = await self.store.load_quota(day) or LedgerDay(day)
        return self._row

    async def _save(self, *, unblock: bool = False) -> None:
        async with self._saving:
            await self.store.quota_advice(self.today(), unblock=unblock)

    def today(self) -> LedgerDay:
        """Today's figures, as this process keeps them (load() reads them at
        start and when a request is the day's first; until then a new day
        starts at nothing)."""
        day, _ = day_bounds(self.clock(), self.tz)
        if self._row is None or self._row.day != day:
            self._row = LedgerDay(day)
        return self._row

    @property
    def resets_at(self) -> float:
        return day_bounds(self.clock(), self.tz)[1]

    @property
    def remaining(self) -> int:
        """Requests left today, by our count or the server's, whichever is lower."""
        row = self.today()
        if row.exhausted:
            return 0
        left = self.daily_quota - row.used
        if row.server_remaining is not None and self._advice_fresh():
            left = min(left, row.server_remaining - (row.used - row.used_at_server))
        return max(0, left)

    def _advice_fresh(self) -> bool:
        at = self._advice_at
        return at is not None and self.monotonic() - at < SERVER_ADVICE_S

    def _wall(self, steady_at: float) -> float:
        """A moment on the monotonic clock, as wall time now."""
        return self.clock() + (steady_at - self.monotonic())

    def blocked(self) -> str | None:
        """Why no request may go now, for /healthz and the operator; None when one may."""
        row = self.today()
        until = datetime.fromtimestamp(self.resets_at, self.tz).strftime("%d.%m %H:%M %Z")
        if row.exhausted:
            return f"PlanFix answered 0007: the day's quota is spent until {until}"
        if row.used >= self.daily_quota:
            return f"all {self.daily_quota} requests of planfix.daily_quota used; more at {until}"
        if self.remaining <= 0 and self._advice_at is not None:
            probe = datetime.fromtimestamp(self._wall(self._advice_at + SERVER_ADVICE_S), self.tz)
            return f"PlanFix's X-RateLimit-Remaining says 0; probing again at {probe:%H:%M %Z}"
        return None

    def next_probe_at(self) -> float | None:
        """While the server's advice alone blocks, when it expires."""
        if self._advice_at is None or not self._advice_fresh():
            return None
        return self._wall(self._advice_at + SERVER_ADVICE_S)

    async def reset_block(self) -> None:
        """Forget a block that is stale (a 0007 from before a plan change, a
        header): the next request finds out afresh."""
        row = self.today()
        row.exhausted, row.server_remaining, self._advice_at = False, None, None
        await self._save(unblock=True)

    @property
    def plannable(self) -> int:
        """What the planner may spend: the remainder less the reserve still held."""
        seconds_left = self.resets_at - self.clock()
        held = reserve_now(self.daily_quota, self.reserve_fraction, seconds_left)
        return max(0, self.remaining - held)

    def more_plannable_at(self) -> float:
        """When the planner gets its next request back: as the held reserve
        shrinks through the day, or at the reset."""
        remaining, reset = self.remaining, self.resets_at
        per_second = self.daily_quota * self.reserve_fraction / 86400.0
        probe = self.next_probe_at()
        if remaining <= 0 and probe is not None:
            return min(probe, reset)
        if remaining <= 0 or per_second <= 0:
            return reset
        # reserve_now() rounds up: it is below `remaining` once the seconds
        # left fall under this.
        return max(self.clock(), reset - (remaining - 1) / per_second)

    @property
    def on_demand_cap(self) -> int:
        """On-demand reads a day: the reserve, never the planner's share."""
        return int(self.daily_quota * self.reserve_fraction + 0.999)

    def blocked_on_demand(self) -> str | None:
        """Why an on-demand read must wait for the planner now; None when it may go."""
        if self.today().on_demand >= self.on_demand_cap:
            return (
                f"the on-demand reserve ({self.on_demand_cap} requests a day) is spent "
                "today; such reads wait for the planner"
            )
        return self.blocked()

    @property
    def daily_plannable(self) -> int:
        return int(self.daily_quota * (1 - self.reserve_fraction))

    @property
    def exhausted(self) -> bool:
        return self.today().exhausted

    @property
    def last_request_at(self) -> float | None:
        """When the last request went, as wall time now (the planner's time line)."""
        return None if self._last_sent is None else self._wall(self._last_sent)

    def requests_last_hour(self) -> int:
        cutoff = self.monotonic() - 3600.0
        while self._recent and self._recent[0] < cutoff:
            self._recent.popleft()
        return len(self._recent)

    @contextlib.contextmanager
    def on_demand(self) -> Iterator[None]:
        """Requests made inside may use the reserve (a `poll` command, a chat's /watch)."""
        token = _on_demand.set(True)
        try:
            yield
        finally:
            _on_demand.reset(token)

    # --- the gate ------------------------------------------------------------------------

    async def before_request(self, method: str) -> None:
        async with self._pace_lock:
            if self._row is None or self._row.day != day_bounds(self.clock(), self.tz)[0]:
                await self.load()  # the day's first: what another process spent counts
            on_demand = _on_demand.get()
            if on_demand and (why := self.blocked_on_demand()) is not None:
                raise QuotaExhaustedError(why, method=method)
            allowed = self.remaining if on_demand else self.plannable
            if allowed <= 0:
                raise QuotaExhaustedError(
                    f"daily request budget spent ({self.today().used}/{self.daily_quota}); "
                    "polling resumes at the reset",
                    method=method,
                )
            if self._last_sent is not None:
                wait = self._last_sent + self.min_gap - self.monotonic()
                if wait > 0:
                    await self.sleep(wait)
            await self._count(on_demand, method)
            now = self.monotonic()
            self._last_sent = now
            self._recent.append(now)

    async def _count(self, on_demand: bool, method: str) -> None:
        """Counted in the store before it is sent (a crash never under-counts),
        where every instance's requests add up: the store refuses one beyond
        the budget, whatever this process last saw of it."""
        day = self.today().day
        held = reserve_now(self.daily_quota, self.reserve_fraction, self.resets_at - self.clock())
        counted = await self.store.quota_count(
            day,
            datetime.fromtimestamp(self.clock(), self.tz).hour,
            on_demand=on_demand,
            used_below=self.daily_quota - (0 if on_demand else held),
            on_demand_cap=self.on_demand_cap,
        )
        if counted is None:  # spent by the others meanwhile: their count is ours now
            await self.load()
            raise QuotaExhaustedError(
                f"daily request budget spent ({self.today().used}/{self.daily_quota}, "
                "every instance's requests counted); polling resumes at the reset",
                method=method,
            )
        self._row = counted

    async def after_request(self, record: RequestRecord) -> None:
        if self.observe is not None:
            self.observe(record)
        row = self.today()
        if record.rate_limit_remaining is not None:
            row.server_remaining = record.rate_limit_remaining
            row.used_at_server = row.used
            self._advice_at = self.monotonic()
        error = record.error
        if isinstance(error, PlanfixApiError) and error.error_class is ErrorClass.QUOTA:
            first = not row.exhausted
            row.exhausted = True
            if first and self.on_exhausted is not None:
                self.on_exhausted(self.resets_at)
        await self._save()
