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

from .alerts.dispatcher import Dispatcher, DispatchSettings
from .alerts.events import Event, EventKind
from .alerts.render import Renderer
from .alerts.routing import Router
from .channels.base import Channel, channel_types
from .channels.console import ConsoleOptions
from .config import Config
from .planfix.client import PlanfixClient
from .store import Store
from .watch.planner import PlannerSettings
from .watch.poller import Poller
from .watch.quota import QuotaLedger

log = logging.getLogger(__name__)

POLL_JOB = "poll"
HEARTBEAT_S = 60  # the poll job runs at least this often, whatever it asked for


def build_channels(config: Config, renderer: Renderer) -> dict[str, Channel]:
    """The configured channels; the console alone when none is configured."""
    options = config.channel_options() or {"console": ConsoleOptions(type="console")}
    types = channel_types()
    return {name: types[opts.type](name, opts, renderer) for name, opts in options.items()}


def renderer_for(config: Config) -> Renderer:
    alerts = config.alerts
    return Renderer(
        locale=alerts.locale,
        timezone=config.planfix.timezone,
        task_url=alerts.task_url,
        account=config.planfix.account,
        template_dir=alerts.templates,
    )


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
        self.renderer = renderer_for(config)
        self.channels = build_channels(config, self.renderer)
        self.router = Router(config.routes, self.channels)
        alerts = config.alerts
        self.dispatcher = Dispatcher(
            self.store,
            self.channels,
            DispatchSettings(
                retry_base_s=alerts.retry_base_s,
                retry_max_s=alerts.retry_max_s,
                urgent_importance=tuple(alerts.urgent_importance),
                urgent_events=tuple(alerts.urgent_events),
                timezone=config.planfix.timezone,
            ),
            clock=clock,
            on_failed=self._channel_failed,
            on_delivered=self._channel_delivered,
        )
        self.poller = Poller(
            self.client,
            self.store,
            self.ledger,
            planner_settings(config),
            wanted_events=config.watch.events,
            clock=clock,
            on_events=lambda stored: self.dispatcher.wake(),
            route=self.router.deliveries,
            group_wait_s=alerts.group_wait_s,
            repeat_overdue_s=alerts.repeat_overdue_s,
            failing_after_s=alerts.planfix_failing_after_s,
        )
        self._failing: set[tuple[str, str]] = set()
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
        # The dispatcher wakes itself on new deliveries; this is its safety net.
        self.scheduler.add_job(
            self.dispatcher.wake,
            "interval",
            seconds=HEARTBEAT_S,
            id="outbox",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=HEARTBEAT_S,
            replace_existing=True,
        )
        self.scheduler.start()
        self.dispatcher.start()

    def _channel_failed(self, channel: str, recipient: str, reason: str) -> None:
        """A channel failing for good is told to the operator once per incident
        (through the other channels)."""
        if (channel, recipient) in self._failing:
            return
        self._failing.add((channel, recipient))
        at = datetime.fromtimestamp(self.clock(), self.tz)
        details = {"channel": channel, "recipient": recipient, "error": reason}
        self.poller.raise_events([Event(EventKind.CHANNEL_FAILING, at, details=details)])
        self.dispatcher.wake()

    def _channel_delivered(self, channel: str, recipient: str) -> None:
        if (channel, recipient) not in self._failing:
            return
        self._failing.discard((channel, recipient))
        at = datetime.fromtimestamp(self.clock(), self.tz)
        details = {"channel": channel, "recipient": recipient}
        self.poller.raise_events([Event(EventKind.CHANNEL_RECOVERED, at, details=details)])
        self.dispatcher.wake()

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
        await self.dispatcher.stop()
        for channel in self.channels.values():
            await channel.aclose()
        await self.client.aclose()
        self.store.close()
