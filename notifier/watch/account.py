"""One PlanFix account, watched: its client, quota ledger, change feed,
watch sets, push inbox and poller, over the account's part of the state,
and the lease that says whether this instance polls it now.

    store(account) ─ quota ledger ─ PlanFix client ─ poller ─(events)→ store

The service (app.py) holds one per account and everything they share: the
alerts, the scheduler, the bot, the leases.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict

import httpx

from ..alerts.events import Event
from ..config import Account, Config, PushSection
from ..ops import logging as oplog
from ..ops.clock import steady
from ..ops.leases import Leases, poll_lease
from ..planfix.client import PlanfixClient, RequestRecord
from ..store import Store, StoreError
from .feed import ChangeFeed
from .planner import PlannerSettings
from .poller import Poller, PollResult
from .push import PushInbox
from .quota import QuotaLedger
from .sets import WatchSets

log = oplog.get(__name__)


def planner_settings(account: Account) -> PlannerSettings:
    watch, planfix = account.watch, account.planfix
    return PlannerSettings(
        min_interval_s=watch.min_interval_s,
        deadline_window_s=watch.deadline_window_s,
        deadline_margin_s=watch.deadline_margin_s,
        finished_interval_s=watch.finished_interval_s,
        unavailable_interval_s=watch.unavailable_interval_s,
        requests_per_second=planfix.requests_per_second,
        batch_size=100,  # until the server says it has no task.getMulti
    )


class AccountWatch:
    """What the service runs for one account."""

    def __init__(
        self,
        account: Account,
        store: Store,
        leases: Leases,
        push: PushSection,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = steady,
        transport: httpx.AsyncBaseTransport | None = None,
        observe_request: Callable[[RequestRecord], None] | None = None,
        on_events: Callable[[Sequence[tuple[int, Event]]], None] | None = None,
        on_polled: Callable[[Sequence[PollResult], float], None] | None = None,
    ) -> None:
        self.account = account
        self.name = account.name
        self.store = store.for_account(account.key)
        self.leases = leases
        self.clock, self.monotonic = clock, monotonic
        self.poll_lease = poll_lease(account.name)
        planfix, watch = account.planfix, account.watch
        self.ledger = QuotaLedger(
            self.store,
            daily_quota=planfix.daily_quota,
            timezone=planfix.timezone,
            requests_per_second=planfix.requests_per_second,
            reserve_fraction=watch.quota_reserve,
            clock=clock,
            sleep=sleep,
            observe=observe_request,
            monotonic=monotonic,
        )
        self.client = PlanfixClient(
            planfix.client_settings(), gate=self.ledger, transport=transport
        )
        self.feed = ChangeFeed(
            self.client, self.store, interval_s=watch.feed_interval_s, clock=clock
        )
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
        self.push = PushInbox(push.min_interval_s, clock)
        self.poller = Poller(
            self.client,
            self.store,
            self.ledger,
            planner_settings(account),
            wanted_events=watch.events,
            clock=clock,
            on_events=on_events,
            on_polled=self._observed(on_polled),
            feed=self.feed,
            sets=self.sets,
            push=self.push,
            auto_watch=push.auto_watch,
        )
        self.poller.account_name = account.name
        self._versions: tuple[int, int] | None = None  # the store's, as last followed
        self._taken_over = False  # the polling, from another instance: reload first
        self.held = not leases.shared  # the polling's lease, as the lease job last found it
        self.polling: asyncio.Task[object] | None = None  # the poll round under way
        self.round_done_at = monotonic()  # health: the poll loop is turning
        self.answered_at: float | None = None  # health: PlanFix last answered a poll
        self.store_error: str | None = None  # the last poll round could not save
        self._push_said = ""  # the push stats as last written

    def _observed(
        self, then: Callable[[Sequence[PollResult], float], None] | None
    ) -> Callable[[Sequence[PollResult], float], None]:
        def observe(results: Sequence[PollResult], took_s: float) -> None:
            if any(r.outcome in ("ok", "unavailable") for r in results):  # PlanFix answered
                self.answered_at = self.monotonic()
            if then is not None:
                then(results, took_s)

        return observe

    @property
    def polls(self) -> bool:
        """This instance holds the account's lease (the only one does on SQLite)."""
        return self.leases.holds(self.poll_lease)

    def may_poll(self) -> bool:
        """Held, and known so by the lease job: a lease taken a moment ago is
        polled once its state is read; one being handed over, no more."""
        return self.held and self.polls

    def reports(self) -> bool:
        """Polled here, and what another instance kept read since it was
        taken: the gauges and health speak of it (not of stale records)."""
        return self.may_poll() and not self._taken_over

    async def load(self, *, keep_watch_set: bool = True) -> None:
        """Read what the store holds: the watch set (the config's written
        first, unless ``keep_watch_set`` is off), the day's quota, the feed's
        cursor, the chats' projects. Before any poll."""
        if keep_watch_set:  # (not for `check`: it may try another config)
            await self.store.set_watched("config", self.account.watch.tasks, self.clock())
        await self.ledger.load()
        await self.feed.load()
        await self.sets.projects_changed()
        await self.poller.reload_watch_set()
        self._versions = await self.store.versions()
        self._taken_over = False  # (all of it read just now)

    async def follow_store(self) -> None:
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

    def lease_found(self) -> bool:
        """After the lease job: whether this instance took the polling over
        just now (it then reads first what the other kept). A lease lost
        ends the round under way."""
        before, now = self.held, self.polls  # (held now: an answer that came late is none)
        self.held = now
        if now and not before:
            log.info("this instance polls now", account=self.name)
            self._taken_over = True
            self.answered_at = None  # (health: not the age of this one's last polling)
            return True
        if not now:
            if before:
                log.warning("this instance polls no more: another holds the lease",
                            account=self.name)  # fmt: skip
            if self.polling is not None:  # (a round under way too: its lease has lapsed)
                self.polling.cancel()
        return False

    async def hand_over(self) -> None:
        """Before the lease is given back (another instance's share): the
        round under way ends first, so that nothing is saved after."""
        log.info("this instance hands the polling over (the accounts are shared anew)",
                 account=self.name)  # fmt: skip
        self.held = False
        await self.stop_round()

    async def round(self, for_s: float, heartbeat_s: float) -> float:
        """One poll round, at most ``for_s`` long; when to come back."""
        self.polling = asyncio.current_task()
        started = self.clock()
        try:
            if self.leases.shared:
                await self.follow_store()
            wake_at = await self.poller.tick(for_s=for_s)
        except StoreError as exc:  # the state cannot be used: say so, try again
            if self.store_error is None:
                log.error("the state cannot be written; polling goes on trying",
                          error=str(exc), account=self.name)  # fmt: skip
            self.store_error = f"the state cannot be written: {exc}"
            return self.clock() + heartbeat_s
        finally:
            self.polling = None
            self.round_done_at = self.monotonic()
        saved = self.poller.last_saved_at
        if self.store_error is not None and (
            (saved is not None and saved >= started) or await self._store_writable()
        ):
            log.info("the state can be written again", account=self.name)
            self.store_error = None
        return wake_at

    async def save_push_stats(self) -> None:
        """For `status` (another process): written when they changed."""
        said = json.dumps(asdict(self.push.stats))
        if said != self._push_said:
            await self.store.set_meta("push.stats", said)
            self._push_said = said

    async def _store_writable(self) -> bool:
        try:
            await self.store.check_writable()
        except StoreError:
            return False
        return True

    def blocked(self) -> str | None:
        """Why this account cannot be polled now, if it cannot (/healthz)."""
        if self.poller.failing_fatally:
            return f"PlanFix refuses us: {self.poller.failing_fatally}"
        return self.ledger.blocked() or self.store_error

    def stalled(self, unhealthy_after_s: float) -> str | None:
        """No poll PlanFix answered for too long, while this instance polls."""
        last = self.answered_at
        if not self.may_poll() or not self.poller.records or last is None:
            return None  # (another instance polls: its health says how that goes)
        if self.monotonic() - last > unhealthy_after_s:
            return f"no successful poll for {self.monotonic() - last:.0f} s"
        return None

    async def reload(self, account: Account) -> None:
        """A new configuration of the same account (its [planfix] keys take
        effect after a restart)."""
        watch = account.watch
        await self.store.set_watched("config", watch.tasks, self.clock())
        await self.poller.reload_watch_set()
        self.poller.breaker.closed()  # a fixed account or token is tried at once
        await self.ledger.reset_block()  # a stale quota block too: the next request finds out
        self.poller.settings = planner_settings(account)  # keeps a known batch size of 1
        self.feed.interval_s = watch.feed_interval_s
        self.feed.reprobe()  # a right granted since may open a feed
        self.sets.configure(watch.numbers, watch.projects, watch.filters)
        await self.sets.projects_changed()
        self.sets.discover_interval_s = watch.discover_interval_s
        self.account = account

    async def stop_round(self) -> None:
        if self.polling is not None:  # a poll's answer not yet stored is asked again next start
            self.polling.cancel()
            await asyncio.wait([self.polling])


def connections_changed(old: Config, new: Config) -> bool:
    """Whether ``new`` watches other accounts than ``old``, or connects to
    one otherwise (which takes effect after a restart; watch sets do not)."""

    def connections(config: Config) -> dict[str, dict[str, object]]:
        return {a.key: a.planfix.model_dump(exclude={"watch"}) for a in config.watched_accounts}

    return connections(old) != connections(new)
