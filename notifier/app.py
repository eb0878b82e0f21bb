"""The service, composed in one place:

    store ─ quota ledger ─ PlanFix client ─ poller ─(events + deliveries)→ store
                                                      dispatcher ─→ channels

APScheduler wakes the poller (at the time the planner asked for, with a
heartbeat) and keeps the gauges fresh; the dispatcher runs one worker per
channel. One process, one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .alerts.dispatcher import Dispatcher, DispatchSettings
from .alerts.events import TASK_EVENT_KINDS, Event, EventKind
from .alerts.render import Renderer
from .alerts.routing import Router
from .channels.base import Channel, channel_type
from .channels.console import ConsoleOptions
from .config import Config
from .ops import logging as oplog
from .ops.clock import StepWatch, steady
from .ops.leases import BOT, Leases, OwnLeases, SharedLeases, poll_lease
from .ops.metrics import Metrics
from .ops.systemd import notify
from .planfix.client import PlanfixClient, RequestRecord
from .store import Store, StoreError, open_store
from .watch.feed import ChangeFeed
from .watch.planner import PlannerSettings
from .watch.poller import Poller, PollResult
from .watch.push import PushInbox
from .watch.quota import QuotaLedger
from .watch.sets import WatchSets

if TYPE_CHECKING:
    from .bot.chat import ChatBot

log = oplog.get(__name__)

POLL_JOB = "poll"
HEARTBEAT_S = 60  # the poll job runs at least this often, whatever it asked for
GAUGES_S = 15
ROUND_STALLED_S = 300.0  # /healthz: 503 when no poll round ended this long (heartbeat 60 s)


def _on_loop(func: Callable[[], None]) -> Callable[[], Awaitable[None]]:
    """A scheduler job that runs on the event loop: APScheduler's asyncio
    executor runs a plain function in a worker thread, where neither the
    store nor asyncio events may be touched."""

    async def job() -> None:
        func()

    return job


def build_channels(config: Config, renderer: Renderer) -> dict[str, Channel]:
    """The configured channels; the console alone when none is configured."""
    options = config.channel_options() or {"console": ConsoleOptions(type="console")}
    built: dict[str, Channel] = {}
    for name, opts in options.items():
        kind = channel_type(opts.type)
        assert kind is not None  # channel_options() found it
        built[name] = kind(name, opts, renderer)
    return built


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


@dataclass(frozen=True, slots=True)
class Alerts:
    """What turns events into messages, for one configuration."""

    renderer: Renderer
    channels: dict[str, Channel]
    router: Router
    dispatcher: Dispatcher


class Service:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = steady,
        keep_watch_set: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic  # ages and waits: a wall-clock step must not move them
        self.tz = ZoneInfo(config.planfix.timezone)
        self.metrics = metrics or Metrics()
        self.store: Store = open_store(config.state)
        self.keep_watch_set = keep_watch_set
        # Several instances on one PostgreSQL: who polls, who runs the bot, who sends.
        self.leases: Leases = (
            SharedLeases(self.store, config.state.lease_s, clock=clock, monotonic=monotonic)
            if config.state.url is not None
            else OwnLeases()
        )
        self.poll_lease = poll_lease(config.planfix.account)
        self._versions: tuple[int, int] | None = None  # the store's, as last followed
        self._taken_over = False  # the polling, from another instance: reload first
        self._polling_lease = not self.leases.shared  # held, as the lease job last found
        self.ledger = QuotaLedger(
            self.store,
            daily_quota=config.planfix.daily_quota,
            timezone=config.planfix.timezone,
            requests_per_second=config.planfix.requests_per_second,
            reserve_fraction=config.watch.quota_reserve,
            clock=clock,
            sleep=sleep,
            observe=self._observe_request,
            monotonic=monotonic,
        )
        self.client = PlanfixClient(
            config.planfix.client_settings(), gate=self.ledger, transport=transport
        )
        self.feed = ChangeFeed(
            self.client, self.store, interval_s=config.watch.feed_interval_s, clock=clock
        )
        watch = config.watch
        self.sets = WatchSets(
            self.client,
            self.store,
            numbers=watch.numbers,
            projects=watch.projects,
            filters=watch.filters,
            discover_interval_s=watch.discover_interval_s,
            clock=clock,
        )
        # Reads on demand, soon: PlanFix's pushes (when [push] listens) and the
        # status page's "poll now".
        self.push = PushInbox(config.push.min_interval_s, clock)
        self.push.on_push = self.wake
        self.poller = Poller(
            self.client,
            self.store,
            self.ledger,
            planner_settings(config),
            wanted_events=config.watch.events,
            clock=clock,
            on_events=self._events_stored,
            on_polled=self._observe_poll,
            feed=self.feed,
            sets=self.sets,
            push=self.push,
            auto_watch=config.push.auto_watch,
        )
        self._install(self._alerts(config), config)
        self._failing: set[tuple[str, str]] = set()
        self._stopped = False
        self._polling: asyncio.Task[object] | None = None  # the poll round under way
        self._store_error: str | None = None  # the last poll round could not save
        self._reloading = asyncio.Lock()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._round_done_at = monotonic()  # health: the poll loop is turning
        self._answered_at: float | None = None  # health: PlanFix last answered a poll
        self._steps = StepWatch(clock, monotonic)
        self._clock_task: asyncio.Task[None] | None = None
        self._outbox_step = 0.0  # a step the outbox has yet to follow
        self._beat_at = -math.inf  # the last heartbeat GET
        self._beat_failing = False
        self.bot: ChatBot | None = None
        self._bot_retry: asyncio.Task[None] | None = None  # the bot, retried in the background
        self.scheduler = AsyncIOScheduler(timezone=self.tz)

    def _alerts(self, config: Config) -> Alerts:
        """Channels, routes and the dispatcher for ``config``, built completely
        (templates compiled and tried on a sample of every event, channels
        constructed) without touching the running ones: a reload swaps them
        in only when all of it worked."""
        alerts = config.alerts
        renderer = renderer_for(config)
        renderer.check()
        channels = build_channels(config, renderer)
        if config.bot.channel in channels:
            bot_channel = channels[config.bot.channel]
            from .channels.telegram import TelegramChannel  # only where a bot is set

            if isinstance(bot_channel, TelegramChannel):
                bot_channel.callback_buttons = True
        router = Router(
            config.routes,
            channels,
            default_events=config.watch.events,
            subscribers=self.store.subscribers,
            project_subscribers=self.store.project_subscribers,
            bot_channel=config.bot.channel or None,
        )
        dispatcher = Dispatcher(
            self.store,
            channels,
            DispatchSettings(
                retry_base_s=alerts.retry_base_s,
                retry_max_s=alerts.retry_max_s,
                urgent_importance=tuple(alerts.urgent_importance),
                urgent_events=tuple(alerts.urgent_events),
                timezone=config.planfix.timezone,
            ),
            clock=self.clock,
            on_failed=self._channel_failed,
            on_delivered=self._channel_delivered,
            on_result=lambda channel, result: self.metrics.deliveries.labels(channel, result).inc(),
            monotonic=self.monotonic,
            leases=self.leases,
        )
        dispatcher.on_latency = self._observe_latency
        return Alerts(renderer, channels, router, dispatcher)

    def _install(self, built: Alerts, config: Config) -> None:
        self.renderer, self.channels, self.router = built.renderer, built.channels, built.router
        self.dispatcher = built.dispatcher
        self.poller.route = self.router.deliveries
        self.poller.wanted = self.router.wanted() or frozenset(TASK_EVENT_KINDS)
        self.poller.group_wait_s = config.alerts.group_wait_s
        self.poller.repeat_overdue_s = config.alerts.repeat_overdue_s
        self.poller.failing_after_s = config.alerts.planfix_failing_after_s

    # --- running -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read what the store holds: the watch set (the config's written
        first, unless ``keep_watch_set`` is off), the day's quota, the feed's
        cursor, the chats' projects. Before start(), and before any poll."""
        if self.keep_watch_set:  # (not for `check`: it may try another config)
            await self.store.set_watched("config", self.config.watch.tasks, self.clock())
        await self.ledger.load()
        await self.feed.load()
        await self.sets.projects_changed()
        await self.poller.reload_watch_set()
        self._versions = await self.store.versions()

    @property
    def polls(self) -> bool:
        """This instance polls the account now (the only one does on SQLite)."""
        return self.leases.holds(self.poll_lease)

    async def _follow_store(self) -> None:
        """What another instance changed in the store: the watch set and the
        chats' projects (a /watch through the bot it runs); on taking over
        the polling, all it kept: the records, the day's quota, the feed."""
        versions = await self.store.versions()
        if self._taken_over:
            await self.ledger.load()
            await self.feed.load()
            await self.poller.reload_all()
            await self.sets.projects_changed()
            self._taken_over = False
        elif self._versions is not None:
            if versions[0] != self._versions[0]:  # (its own changes too: a cheap read)
                await self.poller.reload_watch_set()
            if versions[1] != self._versions[1]:  # (a discovery of the projects follows)
                await self.sets.projects_changed()
        self._versions = versions

    async def _keep_leases(self) -> None:
        """Renew the polling's lease, or take it when free."""
        polled = self._polling_lease
        await self.leases.take(self.poll_lease)
        if self._stopped:  # stop() gave it back meanwhile: not kept
            await self.leases.give_back(self.poll_lease)
            return
        # (held now: an answer that came after the lease's time is no lease)
        taken = self._polling_lease = self.polls
        if taken and not polled:
            log.info("this instance polls now", account=self.config.planfix.account)
            self._taken_over = True  # the next round reads what the other kept
            self._answered_at = None  # (health: not the age of this one's last polling)
            self.wake()
        elif not taken:
            if polled:
                log.warning("this instance polls no more: another may hold the lease",
                            account=self.config.planfix.account)  # fmt: skip
            if self._polling is not None:  # (a round under way too: its lease has lapsed)
                self._polling.cancel()

    async def _keep_bot_lease(self) -> None:
        """The bot runs where its lease is (Telegram allows one reader of updates)."""
        if not self.config.bot.channel or self._stopped:
            return
        taken = await self.leases.take(BOT)
        if self._stopped:  # stop() gave it back meanwhile: not kept
            await self.leases.give_back(BOT)
        elif taken:
            await self.start_bot()
            if self._stopped:  # stopped while the bot started: it must not outlive the service
                await self._stop_bot()
                await self.leases.give_back(BOT)
        elif self.bot is not None or self._bot_retry is not None:
            log.info("another instance runs the Telegram bot now")
            await self._stop_bot()

    async def start(self) -> None:
        """Load the state, then rebuild the jobs (stable ids, in memory: our
        state is in the store)."""
        if self.leases.shared:  # taken before the state is read: no one writes it meanwhile
            self.poller.may_poll = lambda: self.polls
            self._polling_lease = await self.leases.take(self.poll_lease)
            log.info("polling" if self.polls else "another instance polls; this one sends",
                     account=self.config.planfix.account)  # fmt: skip
        await self.load()
        jobs: list[tuple[str, Callable[[], object], dict[str, object]]] = [
            (POLL_JOB, self._poll_job, {"seconds": HEARTBEAT_S, "next_run_time": self._now()}),
            ("outbox", _on_loop(self.dispatcher_wake), {"seconds": HEARTBEAT_S}),  # a safety net
            (
                "gauges",
                self.refresh_gauges,
                {"seconds": GAUGES_S, "next_run_time": self._now()},
            ),
        ]
        if self.leases.shared:  # renewed (or taken when free) every sixth of the lease
            every: dict[str, object] = {"seconds": self.config.state.lease_s / 6}
            jobs.append(("poll_lease", self._keep_leases, every))
            if self.config.bot.channel:
                jobs.append(("bot_lease", self._keep_bot_lease, every))
        for job_id, func, trigger in jobs:
            self.scheduler.add_job(
                func,
                "interval",
                id=job_id,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=HEARTBEAT_S,
                replace_existing=True,
                **trigger,
            )
        # Just after midnight the quota is back: wake the poller at once.
        self.scheduler.add_job(
            _on_loop(self.wake), "cron", hour=0, minute=0, second=5, id="quota_reset",
            coalesce=True, max_instances=1, misfire_grace_time=3600, replace_existing=True,
        )  # fmt: skip
        self.scheduler.start()
        self.dispatcher.start()
        self._clock_task = asyncio.create_task(self._watch_clock(), name="clock-steps")

    async def start_bot(self) -> None:
        """The chat bot, when ``bot.channel`` names a Telegram channel. If
        Telegram cannot be reached now, the service goes on without it (polling
        and the other channels must not wait for a chat bot): the operator is
        told through the channels that work, and the bot is retried in the
        background with back-off until it starts."""
        if not self.config.bot.channel or self.bot is not None or self._bot_retry is not None:
            return
        if not (self.leases.holds(BOT) or await self.leases.take(BOT)):
            return  # another instance runs it: Telegram allows one reader of updates
        error = await self._try_bot()
        if error is None:
            return
        log.warning("the Telegram bot cannot start; going on without it, retrying", error=error)
        await self._channel_failed(self.config.bot.channel, "the bot (getUpdates)", error)
        self._bot_retry = asyncio.create_task(self._retry_bot(), name="bot-retry")

    async def _try_bot(self) -> str | None:
        """Start the bot; None when it runs, else why not."""
        from .bot.chat import ChatBot  # python-telegram-bot: only where a bot is set

        bot = ChatBot(self)
        try:
            await bot.start()
        except Exception as exc:  # Telegram unreachable, the token refused, …
            with contextlib.suppress(Exception):
                await bot.stop()
            # It goes into an alert and the state: PTB names a refused token.
            return oplog.REDACTOR.scrub(f"{type(exc).__name__}: {exc}")
        self.bot = bot
        return None

    async def _retry_bot(self, first_s: float = 10.0, most_s: float = 600.0) -> None:
        wait = first_s
        while True:
            await asyncio.sleep(wait)
            if await self._try_bot() is None:
                break
            wait = min(wait * 2, most_s)
        log.info("the Telegram bot is up")
        await self._channel_delivered(self.config.bot.channel, "the bot (getUpdates)")
        self._bot_retry = None

    async def _stop_bot(self) -> None:
        if self._bot_retry is not None:
            self._bot_retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._bot_retry
            self._bot_retry = None
        if self.bot is not None:
            bot, self.bot = self.bot, None
            await bot.stop()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), self.tz)

    def wake(self) -> None:
        """Poll now (a new watch, the quota reset) instead of at the planned time.
        A round already running needs no wake: it decides afresh before each poll."""
        if self._polling is None and self.scheduler.get_job(POLL_JOB) is not None:
            # (no job yet: not started, and the first round comes at once anyway)
            # Not "now": a round that has just ended is still running for the
            # scheduler until the loop's next turn, and "now" found it so
            # ("skipped: maximum number of running instances", a push apart).
            soon = self._now() + timedelta(seconds=0.1)
            self.scheduler.modify_job(POLL_JOB, next_run_time=soon)

    def dispatcher_wake(self) -> None:
        self.dispatcher.wake()

    # --- the operator's actions (the status page) ----------------------------------------

    async def retry_dead_letter(self, outbox_id: int) -> str:
        channel = await self.store.outbox_channel(outbox_id)
        if channel is not None and channel not in self.channels:
            raise ValueError(f"dead letter #{outbox_id} is for {channel}, no longer configured")
        if not await self.store.outbox_revive(outbox_id, self.clock()):
            raise ValueError(f"no dead letter #{outbox_id} (already retried?)")
        log.info("dead letter retried by the operator", outbox_id=outbox_id)
        self.dispatcher_wake()
        return f"dead letter #{outbox_id} goes out again now"

    def planned(self, task_ids: Sequence[int]) -> dict[int, tuple[float, str]]:
        return self.poller.planned(task_ids)

    async def poll_now(self, task_id: int) -> str:
        if task_id not in self.poller.records:
            raise ValueError(f"task {task_id} is not watched")
        if not self.polls:
            holder = await self.lease_holder(self.poll_lease)
            return f"task {task_id} is polled by another instance ({holder}): ask it there"
        self.push.ask(task_id)
        blocked = self.ledger.blocked()
        if not self.poller.breaker_allows():
            return f"task {task_id} is read once PlanFix answers again (it is failing now)"
        if blocked is not None:
            return f"task {task_id} is read once polling may go on: {blocked}"
        if self.ledger.blocked_on_demand() is not None:
            return (f"task {task_id} goes with the planner's next request (the on-demand "
                    "reserve is spent today)")  # fmt: skip
        return f"task {task_id} is read within seconds (from the on-demand reserve)"

    async def lease_holder(self, name: str) -> str:
        held = [holder for lease, holder, _, _ in await self.store.leases(name) if lease == name]
        return held[0] if held else "none now"

    async def _poll_job(self) -> None:
        # A round ends within half a heartbeat, so the heartbeat never finds it
        # still running; a busy poller simply comes straight back.
        if not self.polls:  # another instance polls; the lease job wakes this one
            self._round_done_at = self.monotonic()
            return
        self._polling = asyncio.current_task()
        round_started = self.clock()
        try:
            if self.leases.shared:
                await self._follow_store()
            wake_at = await self.poller.tick(for_s=min(HEARTBEAT_S / 2, self.leases.lease_s / 3))
        except asyncio.CancelledError:
            if self._stopped or not self.polls:
                return  # stop(), or the lease lost: not a failure for the scheduler to log
            raise
        except StoreError as exc:  # the state cannot be used: say so, try again
            if self._store_error is None:
                log.error("the state cannot be written; polling goes on trying",
                          error=str(exc))  # fmt: skip
            self._store_error = f"the state cannot be written: {exc}"
            wake_at = self.clock() + HEARTBEAT_S
        except Exception:  # one bad round must not stop the service
            log.exception("poll round failed")
            wake_at = self.clock() + HEARTBEAT_S
        else:
            saved = self.poller.last_saved_at
            if self._store_error is not None and (
                (saved is not None and saved >= round_started) or await self._store_writable()
            ):
                log.info("the state can be written again")
                self._store_error = None
        finally:
            self._polling = None
            self._round_done_at = self.monotonic()
            self.metrics.round_done.set(self.clock())
        # Never "now": the scheduler would find this very run still going and
        # skip the next one until the heartbeat.
        wake_at = min(max(wake_at, self.clock() + 0.05), self.clock() + HEARTBEAT_S)
        self.scheduler.modify_job(POLL_JOB, next_run_time=datetime.fromtimestamp(wake_at, self.tz))
        if self._heartbeat_task is None or self._heartbeat_task.done():  # not in the poll's way
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="heartbeat")

    async def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without losing state; return the sections
        that take effect only after a restart (PlanFix connection, state file,
        metrics endpoint, the bot's long poll)."""
        later = [
            section
            for section in ("planfix", "state", "metrics", "bot", "push")
            if getattr(config, section) != getattr(self.config, section)
        ]
        async with self._reloading:  # one reload at a time, and none once stopping
            if self._stopped:
                return later
            built = self._alerts(config)  # may raise: then nothing has changed
            await self.store.set_watched("config", config.watch.tasks, self.clock())
            await self.poller.reload_watch_set()
            self.poller.breaker.closed()  # a fixed account or token is tried at once
            await self.ledger.reset_block()  # a stale quota block too: the next request finds out
            self.poller.settings = planner_settings(config)  # keeps a known batch size of 1
            self.feed.interval_s = config.watch.feed_interval_s
            self.feed.reprobe()  # a right granted since may open a feed
            watch = config.watch
            self.sets.configure(watch.numbers, watch.projects, watch.filters)
            await self.sets.projects_changed()
            self.sets.discover_interval_s = watch.discover_interval_s
            old, old_dispatcher = self.channels, self.dispatcher
            await old_dispatcher.stop(grace_s=self.config.alerts.shutdown_drain_s)
            try:
                # A channel the operator had to fix is tried at once with the new options.
                await self.store.outbox_due_now(list(old_dispatcher.misconfigured), self.clock())
                self._install(built, config)
                self.dispatcher.carry_over(old_dispatcher)
                for name, channel in self.channels.items():
                    if name in old:
                        channel.carry_over(old[name])
                for channel in old.values():
                    with contextlib.suppress(Exception):
                        await channel.aclose()
            finally:
                self.dispatcher.start()  # whatever happened, something sends
            self.config = config
        self.wake()
        log.info("configuration reloaded", watched=len(self.poller.records), restart_needed=later)
        return later

    async def stop(self, drain_s: float = 0.0) -> int:
        """Stop polling; send what is due for up to ``drain_s``; release
        everything. Returns the deliveries left for the next start. Safe twice."""
        if self._stopped:
            return 0
        self._stopped = True
        async with self._reloading:  # a reload under way finishes first
            pass
        for task in (self._heartbeat_task, self._clock_task):
            if task is not None:
                task.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._polling is not None:  # a poll's answer not yet stored is asked again next start
            self._polling.cancel()
            await asyncio.wait([self._polling])
        await self._stop_bot()
        await self.leases.give_back(self.poll_lease, BOT)  # the others take over at once
        started = time.monotonic()
        await self.dispatcher.stop(grace_s=drain_s)  # sends under way finish, not resent
        drain_left_s = drain_s - (time.monotonic() - started)
        left = await self.dispatcher.drain(drain_left_s) if drain_left_s > 0 else 0
        for channel in self.channels.values():
            await channel.aclose()
        await self.client.aclose()
        await self.store.close()
        return left

    # --- the wall clock stepping ---------------------------------------------------------

    async def _watch_clock(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)  # the loop's own clock is monotonic
            step = self._steps.check()
            try:
                if step:
                    self.clock_stepped(step)
                if self._outbox_step:
                    await self.store.outbox_shift(self._outbox_step)  # one the store missed
                    self._outbox_step = 0.0
            except Exception:  # the watch must outlive any one failure
                log.exception("following a wall-clock step failed; trying again")

    def clock_stepped(self, step: float) -> None:
        """The wall clock jumped by ``step`` seconds: every moment remembered
        in wall time (last polls, pending retries, the scheduler's next runs)
        moves with it, so that "polled 30 s ago" stays true, a step back does
        not freeze the schedule and a step forward does not expire it."""
        log.warning("the wall clock stepped; the schedule follows it", step_s=round(step, 1))
        self.poller.clock_stepped(step)
        self._outbox_step += step  # shifted in the store by _watch_clock, retried if it fails
        now = self._now()
        for job in self.scheduler.get_jobs():
            if job.id == "quota_reset":  # that one is at a wall-clock time: it stays
                continue
            if job.id == POLL_JOB and self._polling is not None:
                continue  # the round under way sets its next run itself
            job.modify(next_run_time=now)
        self.dispatcher.wake()

    # --- incidents the operator hears of ------------------------------------------------

    async def _channel_failed(self, channel: str, recipient: str, reason: str) -> None:
        """A channel failing for good is told to the operator once per incident
        (through the other channels)."""
        if (channel, recipient) in self._failing:
            return
        self._failing.add((channel, recipient))
        details = {"channel": channel, "recipient": recipient, "error": reason}
        await self.poller.raise_events(
            [Event(EventKind.CHANNEL_FAILING, self._now(), details=details)]
        )

    async def _channel_delivered(self, channel: str, recipient: str) -> None:
        if (channel, recipient) not in self._failing:
            return
        self._failing.discard((channel, recipient))
        details = {"channel": channel, "recipient": recipient}
        await self.poller.raise_events(
            [Event(EventKind.CHANNEL_RECOVERED, self._now(), details=details)]
        )

    def _events_stored(self, stored: Sequence[tuple[int, Event]]) -> None:
        for _, event in stored:
            self.metrics.events.labels(event.kind.value).inc()
            if event.kind is EventKind.BECAME_OVERDUE and event.task and event.task.deadline:
                flip = event.task.deadline  # a date-only deadline flips at the day's end
                flip += timedelta(days=0 if event.task.deadline_has_time else 1)
                delay = max(0.0, (event.at - flip).total_seconds())
                self.metrics.detection_delay.labels(event.kind.value).observe(delay)
        self.dispatcher.wake()

    def _observe_latency(self, channel: str, seconds: float) -> None:
        self.metrics.alert_latency.labels(channel).observe(max(0.0, seconds))

    # --- health and metrics -------------------------------------------------------------

    def _observe_request(self, record: RequestRecord) -> None:
        result = "ok" if record.error is None else record.error.error_class.value
        self.metrics.requests.labels(record.method, result).inc()

    def _observe_poll(self, results: Sequence[PollResult], took_s: float) -> None:
        self.metrics.poll_duration.observe(took_s)
        for result in results:
            self.metrics.polls.labels(result.outcome).inc()
        if any(r.task is not None for r in results):
            self.metrics.last_poll.set(self.clock())
        if any(r.outcome in ("ok", "unavailable") for r in results):  # PlanFix answered
            self._answered_at = self.monotonic()

    async def refresh_gauges(self) -> None:
        counts = await self.store.outbox_counts()
        m = self.metrics
        m.outbox_pending.set(counts.get("pending", 0))
        m.outbox_dead.set(counts.get("dead", 0))
        oldest = await self.store.outbox_oldest_undelivered(self.clock())
        m.outbox_oldest.set(0 if oldest is None else max(0.0, self.clock() - oldest))
        m.healthy.set(int(self.health()[0]))
        m.quota_used.set(self.ledger.today().used)
        m.quota_on_demand.set(self.ledger.today().on_demand)
        m.quota_remaining.set(self.ledger.remaining)
        m.watched.set(len(self.poller.records))
        m.awaiting_baseline.set(sum(r.card is None for r in self.poller.records.values()))
        if self.config.push.listen:  # for `status`, read from the store by another process
            await self.store.set_meta("push.stats", json.dumps(asdict(self.push.stats)))
        notify(
            f"STATUS=watching {len(self.poller.records)} tasks; quota "
            f"{self.ledger.today().used}/{self.ledger.daily_quota}; outbox "
            f"{counts.get('pending', 0)} pending, {counts.get('dead', 0)} dead"
        )

    def health(self) -> tuple[bool, str]:
        """For /healthz: unhealthy when log-in fails, the quota is spent, or no
        poll has succeeded for too long while there is something to watch."""
        if self.poller.failing_fatally:
            return False, f"PlanFix refuses us: {self.poller.failing_fatally}"
        blocked = self.ledger.blocked()
        if blocked:
            return False, blocked
        if self._store_error is not None:
            return False, self._store_error
        if self.dispatcher.unrecorded:
            return False, (
                f"the state file cannot be written: {self.dispatcher.unrecorded} deliveries "
                "sent but not recorded"
            )
        misconfigured = sorted(self.dispatcher.misconfigured.items())
        if misconfigured:
            name, reason = misconfigured[0]
            return False, f"channel {name}: {reason}"
        stuck = self.dispatcher.stuck(self.config.metrics.channel_stuck_after_s)
        if stuck:
            channel, age = stuck[0]
            return False, f"channel {channel}: failing, nothing delivered for {age / 60:.0f} min"
        stalled = self.monotonic() - self._round_done_at
        if self.scheduler.running and stalled > ROUND_STALLED_S:
            return False, f"no poll round has completed for {stalled:.0f} s"
        limit = self.config.metrics.unhealthy_after_s
        last = self._answered_at
        if not self.polls:  # another instance polls: its health says how that goes
            return True, ""
        if self.poller.records and last is not None and self.monotonic() - last > limit:
            return False, f"no successful poll for {self.monotonic() - last:.0f} s"
        return True, ""

    async def _store_writable(self) -> bool:
        try:
            await self.store.check_writable()
        except StoreError:
            return False
        return True

    async def _heartbeat(self) -> None:
        """A dead man's switch for cron monitors: a GET to ``heartbeat_url``
        after a healthy round, at most once a minute; a dead host is then
        noticed from outside. A failing monitor is logged, once."""
        url = self.config.metrics.heartbeat_url
        now = self.monotonic()
        if not url or now - self._beat_at < HEARTBEAT_S or not self.health()[0]:
            return
        self._beat_at = now
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                (await http.get(url)).raise_for_status()
        except httpx.HTTPError as exc:
            if not self._beat_failing:
                log.warning("the heartbeat URL does not answer", error=type(exc).__name__)
            self._beat_failing = True
        else:
            if self._beat_failing:
                log.info("the heartbeat URL answers again")
            self._beat_failing = False
