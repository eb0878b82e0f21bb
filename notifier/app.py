"""The service: store, quota ledger, PlanFix client and poller, woken by
APScheduler. One process, one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .config import Config
from .planfix.client import PlanfixClient
from .store import Store
from .watch.planner import PlannerSettings
from .watch.poller import EventSink, Poller
from .watch.quota import QuotaLedger

log = logging.getLogger(__name__)

POLL_JOB = "poll"
HEARTBEAT_S = 60  # the poll job runs at least this often, whatever it asked for


def planner_settings(config: Config) -> PlannerSettings:
    watch, planfix = config.watch, config.planfix
    return PlannerSettings(
        min_interval_s=watch.min_interval_s,
        deadline_window_s=watch.deadline_window_s,
        deadline_margin_s=watch.deadline_margin_s,
        finished_interval_s=watch.finished_interval_s,
        unavailable_interval_s=watch.unavailable_interval_s,
        requests_per_second=planfix.requests_per_second,
        batch_size=100,  # until the server says it has no task.getMulti
    )


class Service:
    def __init__(
        self,
        config: Config,
        *,
        on_events: EventSink | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.tz = ZoneInfo(config.planfix.timezone)
        self.store = Store(config.state.path)
        self.store.set_watched("config", config.watch.tasks, clock())
        self.ledger = QuotaLedger(
            self.store,
            daily_quota=config.planfix.daily_quota,
            timezone=config.planfix.timezone,
            requests_per_second=config.planfix.requests_per_second,
            reserve_fraction=config.watch.quota_reserve,
            clock=clock,
            sleep=sleep,
        )
        self.client = PlanfixClient(
            config.planfix.client_settings(), gate=self.ledger, transport=transport
        )
        self.poller = Poller(
            self.client,
            self.store,
            self.ledger,
            planner_settings(config),
            wanted_events=config.watch.events,
            clock=clock,
            on_events=on_events,
        )
        self.scheduler = AsyncIOScheduler(timezone=self.tz)
        self._stopped = False

    def start(self) -> None:
        """Rebuild the jobs (stable ids, in memory: our state is in the store)."""
        self.scheduler.add_job(
            self._poll_job,
            "interval",
            seconds=HEARTBEAT_S,
            id=POLL_JOB,
            next_run_time=datetime.now(self.tz),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=HEARTBEAT_S,
            replace_existing=True,
        )
        # Just after midnight the quota is back: wake the poller at once.
        self.scheduler.add_job(
            self.wake,
            "cron",
            hour=0,
            minute=0,
            second=5,
            id="quota_reset",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
            replace_existing=True,
        )
        self.scheduler.start()

    def wake(self) -> None:
        """Poll now (a new watch, the quota reset) instead of at the planned time."""
        self.scheduler.modify_job(POLL_JOB, next_run_time=datetime.now(self.tz))

    async def _poll_job(self) -> None:
        try:
            wake_at = await self.poller.tick()
        except Exception:  # one bad round must not stop the service
            log.exception("poll round failed")
            wake_at = self.clock() + HEARTBEAT_S
        # Never "now": the scheduler would find this very run still going and
        # skip the next one until the heartbeat.
        wake_at = min(max(wake_at, self.clock() + 0.05), self.clock() + HEARTBEAT_S)
        self.scheduler.modify_job(POLL_JOB, next_run_time=datetime.fromtimestamp(wake_at, self.tz))

    async def stop(self) -> None:
        """Stop polling and release everything; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.client.aclose()
        self.store.close()
