"""The service, composed in one place:

    per account (watch/account.py):
    store ─ quota ledger ─ PlanFix client ─ poller ─(events + deliveries)→ store
    shared:                                           dispatcher ─→ channels

APScheduler wakes each account's poller (at the time its planner asked for,
with a heartbeat) and keeps the gauges fresh; the dispatcher runs one worker
per channel. One process, one asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
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
from .config import Account, Config
from .ops import logging as oplog
from .ops.clock import StepWatch, steady
from .ops.leases import BOT, Leases, OwnLeases, SharedLeases, fair_share
from .ops.metrics import Metrics
from .ops.systemd import notify
from .planfix.client import PlanfixClient, RequestRecord
from .store import Store, StoreError, Subscription, open_store
from .watch.account import AccountWatch, connections_changed
from .watch.feed import ChangeFeed
from .watch.poller import Poller, PollResult
from .watch.push import PushInbox
from .watch.quota import QuotaLedger
from .watch.sets import WatchSets

if TYPE_CHECKING:
    from .bot.chat import ChatBot

log = oplog.get(__name__)

POLL_JOB = "poll"


def poll_job(watch: AccountWatch) -> str:
    """The scheduler's job polling an account (as before accounts for [planfix]'s)."""
    return POLL_JOB if not watch.account.key else f"{POLL_JOB}:{watch.account.key}"


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
    accounts = config.watched_accounts
    return Renderer(
        locale=alerts.locale,
        timezone=config.first.planfix.timezone,
        task_url=alerts.task_url,
        account=config.first.planfix.account,
        template_dir=alerts.templates,
        accounts={a.name: a.planfix.account for a in accounts} if len(accounts) > 1 else None,
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
        holder: str | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.monotonic = monotonic  # ages and waits: a wall-clock step must not move them
        self.tz = ZoneInfo(config.first.planfix.timezone)
        self.metrics = metrics or Metrics()
        self.store: Store = open_store(config.state)
        self.keep_watch_set = keep_watch_set
        # Several instances on one PostgreSQL: who polls, who runs the bot, who sends.
        self.leases: Leases = (
            SharedLeases(
                self.store, config.state.lease_s, clock=clock, monotonic=monotonic, holder=holder
            )
            if config.state.url is not None
            else OwnLeases()
        )
        self.presence = f"instance:{self.leases.holder}"  # (the live count shares the accounts)
        self._live = 1  # instances running, as last counted
        self._free_since: dict[str, float] = {}  # an account no one polls: since (monotonic)
        self._adopted: set[str] = set()  # polled beyond the share: no one else did
        self.watches: dict[str, AccountWatch] = {}
        for account in config.watched_accounts:
            watch = AccountWatch(
                account,
                self.store,
                self.leases,
                config.push,
                clock=clock,
                sleep=sleep,
                monotonic=monotonic,
                transport=transport,
                observe_request=self._observe_request,
                on_events=self._events_stored,
                on_polled=self._observe_poll,
            )
            watch.push.on_push = (lambda w: lambda: self.wake(w))(watch)
            self.watches[account.name] = watch
        self.main = next(iter(self.watches.values()))  # ([planfix]'s, or the first account's)
        self._install(self._alerts(config), config)
        self._failing: set[tuple[str, str]] = set()
        self._stopped = False
        self._reloading = asyncio.Lock()
        self._heartbeat_task: asyncio.Task[None] | None = None
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
            default_events={e for a in config.watched_accounts for e in a.watch.events},
            subscribers=self._subscribers,
            project_subscribers=self._project_subscribers,
            bot_channel=config.bot.channel or None,
            account_events={a.name: a.watch.events for a in config.watched_accounts},
        )
        dispatcher = Dispatcher(
            self.store,
            channels,
            DispatchSettings(
                retry_base_s=alerts.retry_base_s,
                retry_max_s=alerts.retry_max_s,
                urgent_importance=tuple(alerts.urgent_importance),
                urgent_events=tuple(alerts.urgent_events),
                timezone=config.first.planfix.timezone,
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
        for watch in self.watches.values():
            poller = watch.poller
            poller.route = self.router.deliveries
            poller.wanted = self.router.wanted(watch.name) or frozenset(TASK_EVENT_KINDS)
            poller.group_wait_s = config.alerts.group_wait_s
            poller.repeat_overdue_s = config.alerts.repeat_overdue_s
            poller.failing_after_s = config.alerts.planfix_failing_after_s

    async def _subscribers(self, account: str, task_id: int) -> list[Subscription]:
        watch = self.watches.get(account, self.main)  # (an event from before accounts: "")
        return await watch.store.subscribers(task_id)

    async def _project_subscribers(self, account: str, project_id: int) -> list[Subscription]:
        watch = self.watches.get(account, self.main)
        return await watch.store.project_subscribers(project_id)

    # --- one account, as the service was before there were several ---------------------
    # (the command line, the bot's one-account commands, the tests)

    @property
    def poller(self) -> Poller:
        return self.main.poller

    @property
    def client(self) -> PlanfixClient:
        return self.main.client

    @property
    def ledger(self) -> QuotaLedger:
        return self.main.ledger

    @property
    def feed(self) -> ChangeFeed:
        return self.main.feed

    @property
    def sets(self) -> WatchSets:
        return self.main.sets

    @property
    def push(self) -> PushInbox:
        return self.main.push

    @property
    def poll_lease(self) -> str:
        return self.main.poll_lease

    def watch_of(self, name: str | None) -> AccountWatch:
        """An account by name (None: the first); ValueError naming the known ones."""
        if name is None:
            return self.main
        if name not in self.watches:
            raise ValueError(f"no account {name!r} (known: {', '.join(self.watches)})")
        return self.watches[name]

    # --- running -----------------------------------------------------------------------

    async def load(self) -> None:
        """Read what the store holds for every account. Before start(), and
        before any poll."""
        for watch in self.watches.values():
            await watch.load(keep_watch_set=self.keep_watch_set)

    @property
    def polls(self) -> bool:
        """This instance polls an account now (on SQLite: every account)."""
        return any(watch.polls for watch in self.watches.values())

    async def _keep_leases(self) -> None:
        """Renew the accounts' leases held, and take free ones up to this
        instance's fair share (the accounts over the live instances); give
        back those over it, so that an instance (re)started gets its share."""
        leases, watches = self.leases, list(self.watches.values())
        await leases.take(self.presence)
        with contextlib.suppress(StoreError):  # (unreachable: the count last known)
            self._live = len(await self.store.leases_alive("instance:", self.clock()))
        share = fair_share(len(watches), self._live)
        held = set(
            await leases.renew([w.poll_lease for w in watches if leases.holds(w.poll_lease)])
        )
        self._leases_found(watches)  # (one lost: its round ends now)
        orphans = await self._orphans()
        watches.sort(key=self._preference)
        for watch in watches:
            if watch.poll_lease in held or (len(held) >= share and watch.name not in orphans):
                continue
            if await leases.take(watch.poll_lease):
                held.add(watch.poll_lease)
                if watch.name in orphans:
                    self._adopted.add(watch.name)
                self._leases_found([watch])  # at once: no round before its state is read
        if self._stopped:  # stop() gave them back meanwhile: not kept
            await leases.give_back(*held, self.presence)
            return
        self._adopted &= {w.name for w in watches if w.poll_lease in held}
        spare = [w for w in watches if w.poll_lease in held and w.name not in self._adopted]
        for watch in spare[share:]:  # the least preferred: another instance takes them soon
            await watch.hand_over()
            await leases.give_back(watch.poll_lease)

    def _leases_found(self, watches: Sequence[AccountWatch]) -> None:
        for watch in watches:
            if watch.lease_found():
                self.wake(watch)

    async def _orphans(self) -> set[str]:
        """Accounts no instance has polled for a whole lease: ones only this
        instance knows (instances on different configs, a rolling change).
        Taken whatever the share, and kept: nothing else would poll them."""
        try:
            rows = await self.store.leases("poll:")
        except StoreError:
            return set()
        taken = {name[len("poll:") :] for name, _, _, expires in rows if expires >= self.clock()}
        now = self.monotonic()
        for name in self.watches:
            if name in taken:
                self._free_since.pop(name, None)
            else:
                self._free_since.setdefault(name, now)
        return {n for n, since in self._free_since.items() if now - since >= self.leases.lease_s}

    def _preference(self, watch: AccountWatch) -> int:
        """An order of the accounts of this instance's own: instances starting
        together each try others first."""
        return zlib.crc32(f"{self.leases.holder}|{watch.name}".encode())

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
            for watch in self.watches.values():
                watch.poller.may_poll = watch.may_poll
            await self._keep_leases()
            for watch in self.watches.values():
                log.info("polling" if watch.polls else "another instance polls; this one sends",
                         account=watch.name)  # fmt: skip
        await self.load()
        jobs: list[tuple[str, Callable[..., object], dict[str, object]]] = [
            (
                poll_job(watch),
                self._poll_job,
                {"seconds": HEARTBEAT_S, "next_run_time": self._now(), "args": [watch]},
            )
            for watch in self.watches.values()
        ]
        jobs += [
            ("outbox", _on_loop(self.dispatcher_wake), {"seconds": HEARTBEAT_S}),  # a safety net
            ("gauges", self.refresh_gauges, {"seconds": GAUGES_S, "next_run_time": self._now()}),
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
        # Just after midnight the quota is back: wake the pollers at once, at
        # each account's midnight ("quota_reset" is the first account's zone).
        zones: dict[str, list[AccountWatch]] = {}
        for watch in self.watches.values():
            zones.setdefault(watch.account.planfix.timezone, []).append(watch)
        for n, (zone, watches) in enumerate(zones.items()):
            self.scheduler.add_job(
                _on_loop(partial(self.wake_all, watches)), "cron", hour=0, minute=0, second=5,
                timezone=ZoneInfo(zone), id="quota_reset" + (f":{zone}" if n else ""),
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

    def wake(self, watch: AccountWatch | None = None) -> None:
        """Poll now (a new watch, the quota reset) instead of at the planned
        time: one account, or (None) every one. A round already running
        needs no wake: it decides afresh before each poll."""
        for each in [watch] if watch is not None else self.watches.values():
            if each.polling is None and self.scheduler.get_job(poll_job(each)) is not None:
                # (no job yet: not started, and the first round comes at once anyway)
                # Not "now": a round that has just ended is still running for the
                # scheduler until the loop's next turn, and "now" found it so
                # ("skipped: maximum number of running instances", a push apart).
                soon = self._now() + timedelta(seconds=0.1)
                self.scheduler.modify_job(poll_job(each), next_run_time=soon)

    def wake_all(self, watches: Sequence[AccountWatch]) -> None:
        for watch in watches:
            self.wake(watch)

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

    def planned(
        self, task_ids: Sequence[int], account: str | None = None
    ) -> dict[int, tuple[float, str]]:
        return self.watch_of(account).poller.planned(task_ids)

    async def poll_now(self, task_id: int, account: str | None = None) -> str:
        watch = self.watch_of(account)
        if task_id not in watch.poller.records:
            raise ValueError(f"task {task_id} is not watched")
        if not watch.polls:
            holder = await self.lease_holder(watch.poll_lease)
            return f"task {task_id} is polled by another instance ({holder}): ask it there"
        watch.push.ask(task_id)
        blocked = watch.ledger.blocked()
        if not watch.poller.breaker_allows():
            return f"task {task_id} is read once PlanFix answers again (it is failing now)"
        if blocked is not None:
            return f"task {task_id} is read once polling may go on: {blocked}"
        if watch.ledger.blocked_on_demand() is not None:
            return (f"task {task_id} goes with the planner's next request (the on-demand "
                    "reserve is spent today)")  # fmt: skip
        return f"task {task_id} is read within seconds (from the on-demand reserve)"

    async def lease_holder(self, name: str) -> str:
        held = [holder for lease, holder, _, _ in await self.store.leases(name) if lease == name]
        return held[0] if held else "none now"

    async def _poll_job(self, watch: AccountWatch) -> None:
        # A round ends within half a heartbeat, so the heartbeat never finds it
        # still running; a busy poller simply comes straight back.
        if not watch.may_poll():  # another instance polls; the lease job wakes this one
            watch.round_done_at = self.monotonic()
            self._note_round()
            return
        try:
            wake_at = await watch.round(
                for_s=min(HEARTBEAT_S / 2, self.leases.lease_s / 3), heartbeat_s=HEARTBEAT_S
            )
        except asyncio.CancelledError:
            if self._stopped or not watch.may_poll():
                return  # stop(), the lease lost or handed over: not a failure to log
            raise
        except Exception:  # one bad round must not stop the service
            log.exception("poll round failed", account=watch.name)
            wake_at = self.clock() + HEARTBEAT_S
        finally:
            self._note_round()
        # Never "now": the scheduler would find this very run still going and
        # skip the next one until the heartbeat.
        wake_at = min(max(wake_at, self.clock() + 0.05), self.clock() + HEARTBEAT_S)
        when = datetime.fromtimestamp(wake_at, self.tz)
        self.scheduler.modify_job(poll_job(watch), next_run_time=when)
        if self._heartbeat_task is None or self._heartbeat_task.done():  # not in the poll's way
            self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="heartbeat")

    def _note_round(self) -> None:
        """The last_poll_round gauge: the oldest last round of the accounts
        this instance polls (one stuck shows). Polling none, it moves while
        the instance's presence is renewed (a store out of reach stops it);
        an account no instance polls is not its to tell (the lease job takes
        it within a lease, whatever the share)."""
        polled = [w for w in self.watches.values() if w.may_poll()]
        now, steady = self.clock(), self.monotonic()
        if polled:
            self.metrics.round_done.set(now - (steady - min(w.round_done_at for w in polled)))
        elif self.leases.holds(self.presence):
            self.metrics.round_done.set(now)

    async def reload(self, config: Config) -> list[str]:
        """Apply a new configuration without losing state; return the sections
        that take effect only after a restart (PlanFix connection, state file,
        metrics endpoint, the bot's long poll)."""
        later = [
            section
            for section in ("state", "metrics", "bot", "push")
            if getattr(config, section) != getattr(self.config, section)
        ]
        self._check_same_accounts(config)
        if connections_changed(self.config, config):
            later.insert(0, "planfix" if not config.accounts else "accounts")
        async with self._reloading:  # one reload at a time, and none once stopping
            if self._stopped:
                return later
            built = self._alerts(config)  # may raise: then nothing has changed
            by_key = {watch.account.key: watch for watch in self.watches.values()}
            for account in config.watched_accounts:
                await by_key[account.key].reload(account)
            self.watches = {w.name: w for w in (by_key[a.key] for a in config.watched_accounts)}
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
        watched = sum(len(w.poller.records) for w in self.watches.values())
        log.info("configuration reloaded", watched=watched, restart_needed=later)
        return later

    def _check_same_accounts(self, config: Config) -> None:
        """A reload keeps the running accounts (their pollers, leases, and
        the names routes and buttons carry): one added, removed or renamed
        is a restart's to apply; so is another first account (the one
        buttons without a name are of). The tables in another order are the
        same accounts. (One account renamed alone is the connection's change,
        applied after a restart as before.)"""
        old, new = self.config.watched_accounts, config.watched_accounts

        def accounts(of: Sequence[Account]) -> tuple[str, set[tuple[str, str]]]:
            named = {(a.key, a.name if len(of) > 1 else "") for a in of}
            return of[0].key, named

        if accounts(new) != accounts(old):
            raise ValueError(
                "the accounts differ from the running ones (one added, removed or renamed, "
                "or another first): restart the service to apply that"
            )
        named = {name for route in config.routes for name in route.accounts or ()}
        if named - self.watches.keys():
            raise ValueError(
                f"routes name the account {sorted(named - self.watches.keys())[0]!r}, which "
                "runs under another name until a restart: restart the service to apply that"
            )

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
        for watch in self.watches.values():
            await watch.stop_round()
        await self._stop_bot()
        polled = [watch.poll_lease for watch in self.watches.values()]
        await self.leases.give_back(*polled, BOT, self.presence)  # the others take over at once
        started = time.monotonic()
        await self.dispatcher.stop(grace_s=drain_s)  # sends under way finish, not resent
        drain_left_s = drain_s - (time.monotonic() - started)
        left = await self.dispatcher.drain(drain_left_s) if drain_left_s > 0 else 0
        for channel in self.channels.values():
            await channel.aclose()
        for watch in self.watches.values():
            await watch.client.aclose()
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
        for watch in self.watches.values():
            watch.poller.clock_stepped(step)
        self._outbox_step += step  # shifted in the store by _watch_clock, retried if it fails
        now = self._now()
        for job in self.scheduler.get_jobs():
            if job.id.startswith("quota_reset"):  # at a wall-clock time: they stay
                continue
            if any(job.id == poll_job(w) and w.polling is not None for w in self.watches.values()):
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

    async def refresh_gauges(self) -> None:
        counts = await self.store.outbox_counts()
        m = self.metrics
        m.outbox_pending.set(counts.get("pending", 0))
        m.outbox_dead.set(counts.get("dead", 0))
        oldest = await self.store.outbox_oldest_undelivered(self.clock())
        m.outbox_oldest.set(0 if oldest is None else max(0.0, self.clock() - oldest))
        m.healthy.set(int(self.health()[0]))
        # The accounts this instance polls, summed: another instance's are its
        # to report (summed over the instances, each account counts once; one
        # polling nothing watches nothing, and raises no PlanFix alert).
        polled = [w for w in self.watches.values() if w.reports()]
        used = sum(w.ledger.today().used for w in polled)
        m.quota_used.set(used)
        m.quota_on_demand.set(sum(w.ledger.today().on_demand for w in polled))
        m.quota_remaining.set(sum(w.ledger.remaining for w in polled))
        records = [r for w in polled for r in w.poller.records.values()]
        m.watched.set(len(records))
        m.awaiting_baseline.set(sum(r.card is None for r in records))
        if self.config.push.listen:  # for `status`, read from the store by another process
            for watch in self.watches.values():
                await watch.save_push_stats()
        notify(
            f"STATUS=watching {len(records)} tasks; quota "
            f"{used}/{sum(w.ledger.daily_quota for w in polled)}; outbox "
            f"{counts.get('pending', 0)} pending, {counts.get('dead', 0)} dead"
        )

    def health(self) -> tuple[bool, str]:
        """For /healthz: unhealthy when an account's log-in fails, its quota is
        spent, or no poll has succeeded for too long while there is something
        to watch; or when deliveries are stuck."""

        def of(watch: AccountWatch) -> str:
            return f"account {watch.name}: " if len(self.watches) > 1 else ""

        for watch in self.watches.values():  # (one another instance polls: its to tell)
            if watch.reports() and (blocked := watch.blocked()) is not None:
                return False, of(watch) + blocked
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
        for watch in self.watches.values():
            stalled = self.monotonic() - watch.round_done_at
            if self.scheduler.running and stalled > ROUND_STALLED_S:
                return False, of(watch) + f"no poll round has completed for {stalled:.0f} s"
        for watch in self.watches.values():
            if (stalled_why := watch.stalled(self.config.metrics.unhealthy_after_s)) is not None:
                return False, of(watch) + stalled_why
        return True, ""

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
