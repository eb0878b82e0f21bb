"""The poller: asks the planner what is due, asks PlanFix, stores what it
found and hands each change to the differ. A failed or garbled answer changes
no snapshot and raises no alert; one bad task never stops the rest.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from ..alerts.events import Event, EventKind, TaskSummary
from ..ops import logging as oplog
from ..planfix.client import PlanfixClient
from ..planfix.errors import (
    UNSUPPORTED_CODES,
    ErrorClass,
    PlanfixApiError,
    PlanfixError,
    QuotaExhaustedError,
    is_task_gone,
)
from ..planfix.model import Task
from ..planfix.statuses import StatusCatalog
from ..store import Store
from . import diff
from .breaker import Breaker, is_server_fault
from .feed import ChangeFeed
from .planner import (
    Budget,
    Candidate,
    Decision,
    PlannerSettings,
    TaskView,
    decide,
    learn,
    next_poll,
    pace_gap,
    rate_per_day,
)
from .push import PushInbox
from .quota import QuotaLedger
from .schedule import PlanIndex
from .sets import NUMBER_NOT_ID, WatchSets
from .state import Card, TaskRecord

# An event → its (channel, recipient)s: the router's, read where chats subscribe.
Route = Callable[[Event], Awaitable[Sequence[tuple[str, str]]]]

log = oplog.get(__name__)
STATUS_NAMES = "status.names"  # meta: the catalogue's names, for `status`
PUSHED = "push"  # the watch-set source of tasks watched because they were pushed
PUSH_NUMBERS_PER_ROUND = 20  # numbers resolved a round (a request each, at most)
PUSH_BATCHES_PER_ROUND = 5  # pushed tasks' reads a round: a round stays short
SUSPECT = "gone?"  # last_result after one 3001/3008: confirmed by the next poll
EventSink = Callable[[Sequence[tuple[int, Event]]], None]


@dataclass(frozen=True, slots=True)
class PollResult:
    task_id: int
    task: Task | None
    error: PlanfixError | None
    events: list[Event] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.error is None:
            return "ok"
        if is_task_gone(self.error):
            return "unavailable"
        return "quota" if self.error.error_class is ErrorClass.QUOTA else "error"


@dataclass
class _Incident:
    """PlanFix failing as a whole (not one task): told to the operator once."""

    since: float
    reported: bool = False
    last_error: str = ""
    fatal: bool = False


class Poller:
    def __init__(
        self,
        client: PlanfixClient,
        store: Store,
        ledger: QuotaLedger,
        settings: PlannerSettings,
        *,
        wanted_events: Iterable[str],
        clock: Callable[[], float] = time.time,
        on_events: EventSink | None = None,
        route: Route | None = None,
        group_wait_s: float = 0.0,
        repeat_overdue_s: float | None = None,
        failing_after_s: float = 15 * 60,
        on_polled: Callable[[Sequence[PollResult], float], None] | None = None,
        feed: ChangeFeed | None = None,
        sets: WatchSets | None = None,
        push: PushInbox | None = None,
        auto_watch: bool = False,
    ) -> None:
        self.client = client
        self.store = store
        self.ledger = ledger
        self._settings = settings
        self.wanted = frozenset(wanted_events)
        self.clock = clock
        self.on_events = on_events
        self.route = route
        self.account_name = ""  # its name, in every event this poller raises
        self.group_wait_s = group_wait_s
        self.repeat_overdue_s = repeat_overdue_s
        self.failing_after_s = failing_after_s
        self.on_polled = on_polled
        self.feed = feed  # what changed account-wide; None: every task on its own plan
        self.sets = sets  # watch sets to resolve (task numbers)
        self.push = push  # tasks PlanFix pushed, to read soon
        self.auto_watch = auto_watch  # a pushed task in no set joins the watch set
        self._hurried: frozenset[int] = frozenset()  # pushed tasks in this request
        self._for_operator: list[Event] = []  # operator's events not yet stored
        # The records change under this lock: a poll's answer is applied and
        # saved, or the watch set reloaded, whole. Each awaits the store (which
        # yields on PostgreSQL): a /watch of the same task between a poll's
        # read of its old card and its save raised the change twice.
        self._records_lock = asyncio.Lock()
        self._by_number: dict[int, int] = {}  # number people see → task id, from the cards
        self._by_number_at = -math.inf
        self._no_such_number: dict[int, float] = {}  # number → not asked again before
        self._unknown_ids: set[int] = set()  # configured ids PlanFix does not know, said once
        self.last_success_at: float | None = None  # the last poll PlanFix answered
        self.last_saved_at: float | None = None  # the last poll the store took
        self.catalog = StatusCatalog.empty()
        self.records: dict[int, TaskRecord] = {}
        self._index = PlanIndex()  # the tasks' candidates, kept between decisions
        self._incident: _Incident | None = None
        self.breaker = Breaker()  # PlanFix failing as a whole: probe, do not hammer
        self._quota_out = False  # the block told; "restored" is told when it ends
        self.may_poll: Callable[[], bool] = lambda: True  # the service's lease, where shared
        ledger.on_exhausted = lambda _resets_at: self._check_quota()  # 0007: told at once

    @property
    def settings(self) -> PlannerSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: PlannerSettings) -> None:
        self._settings = settings
        self._index.clear()  # they were worked out with the old settings

    # --- what to watch ------------------------------------------------------------------

    async def reload_watch_set(self) -> None:
        """Follow the store's watch set (config at start, chats at any time)."""
        async with self._records_lock:
            await self._reload_watch_set()

    async def reload_all(self) -> None:
        """Every record read afresh from the store (another instance polled
        until now: what this one kept is stale)."""
        async with self._records_lock:
            await self._reload_watch_set(keep=False)

    async def _reload_watch_set(self, keep: bool = True) -> None:
        # Built aside and swapped in at once: a reader between the store's
        # answers (the bot, the status page) sees the old set or the new one.
        ids = await self.store.watched_ids()
        kept = self.records if keep else {}
        loaded = await self.store.load_records([i for i in ids if i not in kept])
        now = self.clock()
        for record in loaded.values():
            if record.last_poll_at is not None and record.last_poll_at > now:
                record.last_poll_at = now  # saved before the wall clock stepped back
        self.records = {
            task_id: kept.get(task_id) or loaded.get(task_id) or TaskRecord(task_id)
            for task_id in ids
        }
        if not keep:
            self._index.clear()
        for task_id in self._index.ids() - self.records.keys():
            self._index.remove(task_id)

    def view(self, record: TaskRecord) -> TaskView:
        card = record.card
        made = TaskView(
            task_id=record.task_id,
            last_poll_at=record.last_poll_at,
            deadline=card.deadline if card else None,
            overdue_seen=bool(card and card.overdued),
            close_seen=bool(card and card.close_to_deadline),
            finished=bool(card and self.catalog.is_finished(card.status, card.status_set)),
            unavailable=record.unavailable,
            failures=record.failures,
            rate_per_day=rate_per_day(record.changes, record.observed_s),
        )
        return made

    def clock_stepped(self, step: float) -> None:
        """The wall clock jumped by ``step``: the moments remembered in wall
        time move with it (see ops/clock.py)."""
        for record in self.records.values():
            if record.last_poll_at is not None:
                record.last_poll_at += step
            if record.last_ok_at is not None:
                record.last_ok_at += step
            if record.reminded_at is not None:
                record.reminded_at += step
        if self.last_success_at is not None:
            self.last_success_at += step
        if self._incident is not None:
            self._incident.since += step
        self.breaker.shift(step)
        if self.feed is not None:
            self.feed.clock_stepped(step)
        self._index.clear()  # it never goes back in time: built afresh

    # --- deciding ---------------------------------------------------------------------

    def budget(self) -> Budget:
        """The planner's share: what the ledger allows, less what the change
        feed's looks still need today."""
        ledger = self.ledger
        left_s = ledger.resets_at - self.clock()
        held = (
            self.feed.reserve(left_s, ledger.daily_plannable, ledger.plannable) if self.feed else 0
        )
        return Budget(
            remaining=max(0, ledger.remaining - held),
            resets_at=ledger.resets_at,
            daily=ledger.daily_plannable,
            last_request_at=ledger.last_request_at,
            requests_last_hour=ledger.requests_last_hour(),
            available=max(0, ledger.plannable - held),
        )

    def decide(self) -> Decision:
        self._check_quota()
        settings = self.settings
        if self.client.multi_supported is False and settings.batch_size > 1:
            self.settings = settings = replace(settings, batch_size=1)
        probe_at = self.breaker.waiting_until(self.clock())
        if probe_at is not None:
            return Decision((), probe_at, "planfix failing")
        if len(self._index) != len(self.records):
            for record in self.records.values():
                if record.task_id not in self._index:
                    self._index.update(Candidate.of(self.view(record), settings))
        now = self.clock()
        decision = decide(self.budget(), now, settings, lambda room: self._index.due(now, room))
        if decision.reason == "budget":
            decision = replace(decision, wake_at=self.ledger.more_plannable_at())
        if self._feed_waits() and self.feed is not None and self.feed.next_at < decision.wake_at:
            decision = replace(decision, wake_at=self.feed.next_at)
        if self.push is not None:
            if decision.poll:  # pushed tasks the reserve could not pay for go first
                hurried = tuple(self.push.hurried(settings.batch_size))
                self._hurried = frozenset(hurried)
                planned = [t for t in decision.poll if t not in hurried]
                poll = hurried + tuple(planned[: settings.batch_size - len(hurried)])
                decision = replace(decision, poll=poll)
            if self._push_may_read():  # (else a due push would spin the poll job)
                decision = replace(decision, wake_at=min(decision.wake_at, self.push.next_at()))
        return decision

    def planned(self, task_ids: Sequence[int]) -> dict[int, tuple[float, str]]:
        """When each of these tasks is next polled, roughly, and why (for the
        operator; O(N) in the watched tasks)."""
        now, settings = self.clock(), self.settings
        budget = self.budget()
        count, weights = self._index.rotation(now)
        gap = pace_gap(budget, now, settings) if budget.remaining else math.inf
        each = count <= settings.batch_size  # every request takes every task in turn
        cycle = gap if each else weights * gap / settings.batch_size
        found: dict[int, tuple[float, str]] = {}
        for task_id in task_ids:
            record = self.records.get(task_id)
            if record is None:
                continue
            candidate = self._index.candidate(task_id) or Candidate.of(self.view(record), settings)
            when, why = next_poll(candidate, now, cycle, each=each)
            if budget.remaining == 0 and why != "none":  # nothing goes before the reset
                when = max(when, budget.resets_at)
            found[task_id] = (when, why)
        return found

    def _feed_waits(self) -> bool:
        """A look is coming: the feed is on, and neither the quota nor a
        failing PlanFix holds every request."""
        return (
            self.feed is not None
            and self.feed.active
            and self.ledger.blocked() is None
            and self.breaker_allows()
        )

    async def tick(self, max_requests: int = 1000, for_s: float | None = None) -> float:
        """Poll whatever is due, until nothing is (or ``for_s`` seconds have
        passed, on the monotonic clock); return when to come back."""
        until = None if for_s is None else time.monotonic() + for_s
        if self.sets is not None and self.sets.numbers_due(self.clock()) and self.breaker_allows():
            await self._refresh_sets()
        if self._discovery_due():
            await self._discover()
        for _ in range(max_requests):
            if not self.may_poll():  # the lease lapsed (a store out of reach, a pause)
                break
            if self._push_due():
                await self.read_pushed()
            if self._feed_waits() and self.feed is not None and self.feed.due(self.clock()):
                await self.follow_feed()
            self._hurried = frozenset()
            decision = self.decide()
            await self._tell_operator()
            if not decision.poll:
                return decision.wake_at
            results = await self.poll(decision.poll)
            if self.push is not None and self._hurried:  # unread: they keep their turn first
                self.push.hurry([r.task_id for r in results if r.task_id in self._hurried
                                 and _unread(r)])  # fmt: skip
            if until is not None and time.monotonic() >= until:
                break
        return self.clock()

    # --- pushes -----------------------------------------------------------------------

    def _push_due(self) -> bool:
        return (
            self.push is not None and self.push.next_at() <= self.clock() and self._push_may_read()
        )

    def _push_may_read(self) -> bool:
        return self.ledger.blocked() is None and self.breaker_allows()

    async def read_pushed(self) -> None:
        """Read the tasks PlanFix pushed (see watch/push.py), from the
        on-demand reserve, a few requests a round; once the reserve is spent,
        the planner takes them along."""
        push = self.push
        assert push is not None
        numbers = push.numbers()
        for index, number in enumerate(numbers[:PUSH_NUMBERS_PER_ROUND]):
            if self.ledger.blocked_on_demand() is not None:
                push.renumber(numbers[index:])  # kept: resolved once there is reserve
                break
            task_id = await self.id_of_number(number)
            if task_id is not None:
                push.schedule(task_id)
        push.renumber(numbers[PUSH_NUMBERS_PER_ROUND:])
        size = max(1, self.settings.batch_size)
        pushed = push.take(self.clock(), limit=size * PUSH_BATCHES_PER_ROUND)
        watched = [task_id for task_id in pushed if task_id in self.records]
        others = [task_id for task_id in pushed if task_id not in self.records]
        if others and not self.auto_watch:
            push.stats.ignored += len(others)
            log.debug("pushed tasks in no watch set ignored", tasks=others[:20])
        elif others:
            watched += others  # read now: a card is a baseline, and proves the task exists
        for first in range(0, len(watched), size):
            batch = watched[first : first + size]
            if self.ledger.blocked_on_demand() is not None or not self.breaker_allows():
                push.hurry(watched[first:])
                return
            with self.ledger.on_demand():
                results = await self.poll(batch)
            push.stats.read += len(batch)
            await self._watch_pushed([r.task_id for r in results if r.task is not None and
                                r.task_id not in self.records])  # fmt: skip
            unread = [r.task_id for r in results if r.outcome == "quota"]
            if unread:
                push.hurry(unread + watched[first + size :])
                return

    async def _watch_pushed(self, task_ids: list[int]) -> None:
        """``auto_watch``: pushed tasks that exist join the watch set (their
        card just read is the baseline)."""
        if not task_ids:
            return
        for task_id in task_ids:
            await self.store.add_watched(task_id, PUSHED, self.clock())
        await self.reload_watch_set()
        log.info("pushed tasks in no watch set are watched now", tasks=task_ids[:20])

    async def id_of_number(self, number: int) -> int | None:
        """A pushed number's task id: from the cards at hand, then from what
        was resolved before, then (once, remembered) from PlanFix."""
        now = self.clock()
        if number not in self._by_number and now - self._by_number_at >= 60.0:
            self._by_number = {
                r.card.general: task_id
                for task_id, r in self.records.items()
                if r.card is not None and r.card.general is not None
            }
            self._by_number_at = now
        if number in self._by_number:
            return self._by_number[number]
        known = await self.store.get_meta(f"number:{number}")
        if known is not None:
            return int(known)
        if self._no_such_number.get(number, -math.inf) > now:
            return None  # looked up lately, in vain: not every push costs a request
        try:
            with self.ledger.on_demand():
                task = await self.client.get_task_by_number(number)
        except PlanfixError as exc:
            if len(self._no_such_number) > 10_000:
                self._no_such_number.clear()
            self._no_such_number[number] = now + 3600.0
            log.warning("push: no task with this number could be read", number=number,
                        error=exc.message)  # fmt: skip
            return None
        await self.store.set_meta(f"number:{number}", str(task.id))
        self._by_number[number] = task.id
        return task.id

    # --- polling ----------------------------------------------------------------------

    async def refresh_catalog(self) -> None:
        try:
            catalog = await self.client.status_catalog()
        except PlanfixError:
            return  # keep the names we had; numbers stand in where none are known
        if catalog is not self.catalog:
            self.catalog = catalog
            self._index.clear()  # "finished" may read differently now
            # For `status`, another process: the names by "process:status".
            names = {
                f"{set_id}:{status_id}": status.name
                for set_id, statuses in catalog.by_set.items()
                for status_id, status in statuses.items()
            }
            await self.store.set_meta(STATUS_NAMES, json.dumps(names, ensure_ascii=False))

    def _unknown_id(self, task_id: int) -> None:
        """An id never seen that PlanFix does not know: most often a task's
        number put where its id belongs. Said once."""
        if task_id in self._unknown_ids:
            return
        self._unknown_ids.add(task_id)
        log.warning(f"watch.tasks: PlanFix has no task with this id. {NUMBER_NOT_ID}",
                    task_id=task_id)  # fmt: skip

    async def _refresh_sets(self) -> None:
        """Numbers to resolve: their cards are their baselines."""
        assert self.sets is not None
        await self.refresh_catalog()
        started = self.clock()
        cards, errors = await self.sets.resolve()
        if errors:
            self._track(errors, self.clock())
            await self._tell_operator()
        await self.reload_watch_set()
        await self._take_cards(cards, started, fresh=[card.id for card in cards])

    def _discovery_due(self) -> bool:
        return (
            self.sets is not None
            and self.ledger.blocked() is None
            and self.breaker_allows()
            and self.sets.discovery_due(self.clock(), self.ledger.daily_plannable)
        )

    async def _discover(self) -> None:
        """Read the watched projects' and saved filters' members afresh: those
        that joined get a baseline; those that seem to have left are read once
        more (a change that took them out is alerted), and go when missing
        from two discoveries running."""
        assert self.sets is not None
        await self.refresh_catalog()
        started = self.clock()
        try:
            found, cards = await self.sets.discover()
        except QuotaExhaustedError:
            return
        except PlanfixApiError as exc:
            if exc.code in UNSUPPORTED_CODES:
                self.sets.unsupported_here(exc)
            else:
                self._track([exc], self.clock())
            return
        except PlanfixError as exc:
            self._track([exc], self.clock())
            log.debug("watch set discovery failed", error=exc.message)
            return
        fresh = found - self.records.keys()
        _, missing = await self.sets.settle(found)
        await self.reload_watch_set()  # those gone for good are no longer polled
        await self._take_cards(cards, started, fresh=fresh)
        await self._read_all(sorted(missing & self.records.keys()))

    async def _take_cards(
        self, cards: Sequence[Task], started: float, *, fresh: Collection[int] = ()
    ) -> None:
        """Cards read in a list (feed, watch sets), from ``started`` on: polls
        of the watched tasks among them, unless a newer card of the task came
        meanwhile (the bot's /watch between two pages): an older card never
        overwrites it. A task ``fresh`` in the watch set gets a baseline,
        whatever was known of it. (The caller has reloaded the watch set if
        it changed it.)"""
        for task_id in fresh:
            self.forget(task_id)
        taken = [
            card
            for card in cards
            if card.id in self.records
            and (self.records[card.id].last_ok_at or -math.inf) <= started
        ]
        known = [c.id for c in taken if self.records[c.id].card is not None]
        stored = await self.store.load_cards(known) if known else {}  # one read a page
        answers: dict[int, Task | PlanfixError] = {
            card.id: self._with_people(card, stored.get(card.id)) for card in taken
        }
        if answers:
            await self._take(answers, started)

    def breaker_allows(self) -> bool:
        return self.breaker.waiting_until(self.clock()) is None

    async def follow_feed(self) -> None:
        """One look at the change feed: the cards it carries are diffed as
        polls of their tasks; the tasks it only names are read now."""
        assert self.feed is not None
        started = self.clock()
        await self.refresh_catalog()
        joins = self.sets.joins if self.sets is not None else None
        try:
            look = await self.feed.look(self.records.keys(), joins)
        except QuotaExhaustedError:
            return  # the look waits for the budget, its cursor unmoved
        except PlanfixError as exc:
            self._track([exc], self.clock())
            log.debug("change feed look failed", error=exc.message)
            return
        self._track([None], self.clock())  # PlanFix answered
        joined = [card.id for card in look.cards if card.id not in self.records]
        if joined and self.sets is not None:  # a new task in a watched project
            await self.sets.join(joined)
            await self.reload_watch_set()
        await self._take_cards(look.cards, started, fresh=joined)
        if await self._read_all(sorted(look.to_read)) and look.complete:
            await self.feed.commit(look)  # else the next look covers this one's time again

    async def _read_all(self, task_ids: Sequence[int]) -> bool:
        """Poll these tasks now, in batches; False when PlanFix or the quota
        kept any from being read (a task's own error counts as read)."""
        size = max(1, self.settings.batch_size)
        for first in range(0, len(task_ids), size):
            results = await self.poll(task_ids[first : first + size])
            if any(_unread(result) for result in results):
                return False
        return True

    def forget(self, task_id: int) -> None:
        """A task new to the watch set starts afresh: its next card is a
        baseline, whatever was stored from an earlier watch of it."""
        if task_id in self.records:
            self.records[task_id] = TaskRecord(task_id)
            self._index.remove(task_id)

    @staticmethod
    def _with_people(card: Task, old: Task | None) -> Task:
        """A task.getList card has no members or auditors: keep the ones known."""
        if old is None:
            return card
        return replace(card, members=old.members, auditors=old.auditors)

    async def poll(self, task_ids: Sequence[int], *, save: bool = True) -> list[PollResult]:
        """Ask PlanFix about these tasks once; store and raise what changed (or,
        with ``save=False``, only say what would be raised)."""
        started = self.clock()
        await self.refresh_catalog()
        answers = await self.client.get_tasks(task_ids)
        return await self._take(answers, started, save=save)

    async def _take(
        self,
        answers: Mapping[int, Task | PlanfixError],
        started: float,
        *,
        save: bool = True,
    ) -> list[PollResult]:
        """The answers of one request: apply, store and raise what changed."""
        async with self._records_lock:
            return await self._take_locked(answers, started, save=save)

    async def _take_locked(
        self,
        answers: Mapping[int, Task | PlanfixError],
        started: float,
        *,
        save: bool,
    ) -> list[PollResult]:
        now = self.clock()
        at = datetime.fromtimestamp(now, UTC)
        results: list[PollResult] = []
        changed: list[tuple[TaskRecord, list[Event]]] = []
        for task_id, answer in answers.items():
            record = self.records.get(task_id) or TaskRecord(task_id)
            if (record.last_ok_at or -math.inf) > started:
                # A newer card came while this request was out (the bot's
                # /watch): it stands; this older answer would undo it, and
                # alert the change twice.
                continue
            if isinstance(answer, QuotaExhaustedError) or (
                isinstance(answer, PlanfixError) and answer.error_class is ErrorClass.QUOTA
            ):
                results.append(PollResult(task_id, None, answer))
                continue  # not the task's fault: nothing about it changes
            updated, events = await self._apply(record, answer, now, at)
            results.append(
                PollResult(task_id, answer if isinstance(answer, Task) else None,
                           answer if isinstance(answer, PlanfixError) else None, events)
            )  # fmt: skip
            changed.append((updated, events))
        self._track([r.error for r in results], now)
        answered = any(r.outcome in ("ok", "unavailable") for r in results)  # PlanFix did
        if answered:
            self._check_quota(answered=True)  # told before this poll's own events
        await self._tell_operator()
        if save and changed:
            await self._save(changed)  # may raise: then this poll was no success
        if answered:
            self.last_success_at = now
        if self.on_polled is not None:
            self.on_polled(results, now - started)
        log.debug(
            "polled",
            tasks=len(results),
            ok=sum(r.outcome == "ok" for r in results),
            events=sum(len(r.events) for r in results),
            saved=save,
        )
        return results

    async def ingest(self, task: Task, started: float | None = None) -> list[Event]:
        """A card fetched elsewhere (the bot's /watch, asked at ``started``)
        counts as a poll of it, unless a newer card came meanwhile."""
        async with self._records_lock:
            now = self.clock()
            record = self.records.get(task.id) or TaskRecord(task.id)
            if started is not None and (record.last_ok_at or -math.inf) > started:
                return []
            at = datetime.fromtimestamp(now, UTC)
            updated, events = await self._apply(record, task, now, at)
            await self._save([(updated, events)])
            return events

    async def _apply(
        self, record: TaskRecord, answer: Task | PlanfixError, now: float, at: datetime
    ) -> tuple[TaskRecord, list[Event]]:
        elapsed = now - record.last_poll_at if record.last_poll_at is not None else 0.0
        if record.card is None and getattr(answer, "code", None) == "3001":
            self._unknown_id(record.task_id)
        if isinstance(answer, Task):
            card = Card.of(answer)
            # Most polls find the card as it was: then the store is not even read.
            same = record.card is not None and record.card.digest == card.digest
            old = (
                None if same or record.card is None else await self.store.load_card(record.task_id)
            )
            events = [] if same else diff.diff(old, answer, self.catalog, at)
            if record.unavailable:
                events.insert(0, diff.available_again(answer, self.catalog, at))
            changes, observed = learn(
                record.changes, record.observed_s, diff.is_change(old, answer), elapsed
            )
            reminded_at = self._reminder(record, answer, events, now, at)
            updated = replace(
                record, card=card, last_poll_at=now, last_ok_at=now, last_result="ok",
                last_error=None, failures=0, unavailable=False, changes=changes,
                observed_s=observed, polls=record.polls + 1, reminded_at=reminded_at,
            )  # fmt: skip
        elif is_task_gone(answer) and not record.unavailable and record.last_result != SUSPECT:
            # A single "gone" may be PlanFix's glitch: ask again (after the short
            # failure back-off) before telling anyone the task has gone.
            events = []
            updated = replace(
                record, last_poll_at=now, last_result=SUSPECT, last_error=answer.message,
                failures=record.failures + 1, polls=record.polls + 1,
            )  # fmt: skip
        elif is_task_gone(answer):
            code = getattr(answer, "code", "")
            last = None if record.unavailable else await self._last_card(record)
            events = [] if record.unavailable else [
                diff.unavailable(last, record.task_id, code, self.catalog, at)
            ]  # fmt: skip
            updated = replace(
                record, last_poll_at=now, last_result="unavailable", last_error=answer.message,
                failures=0, unavailable=True, polls=record.polls + 1,
            )  # fmt: skip
        elif is_server_fault(answer):
            # PlanFix's fault, not the task's: the breaker paces the retries, and
            # the task keeps its place in the schedule for when PlanFix is back.
            events = []
            updated = replace(record, last_result="error", last_error=answer.message)
        else:  # the task's own trouble (an unreadable card, 3014): it backs off alone
            events = []
            updated = replace(
                record, last_poll_at=now, last_result="error", last_error=answer.message,
                failures=record.failures + 1, polls=record.polls + 1,
            )  # fmt: skip
        wanted = [e for e in events if e.kind.value in self.wanted]
        return updated, wanted

    async def _last_card(self, record: TaskRecord) -> Task | None:
        return await self.store.load_card(record.task_id) if record.card is not None else None

    def _reminder(
        self, record: TaskRecord, task: Task, events: list[Event], now: float, at: datetime
    ) -> float | None:
        """While a task stays overdue, remind every ``repeat_overdue_s``; return
        when it was last told (None once it is no longer overdue)."""
        if not task.is_overdued:
            return None
        if any(e.kind is EventKind.BECAME_OVERDUE for e in events):
            return now
        last = record.reminded_at if record.reminded_at is not None else record.last_ok_at
        every = self.repeat_overdue_s
        if every is None or last is None or record.card is None or now - last < every:
            return record.reminded_at
        deadline = diff.format_when(task.end_time, task.end_time_has_time)
        summary = TaskSummary.of(task, self.catalog)
        events.append(
            Event(
                EventKind.BECAME_OVERDUE, at, task.id, summary, None, deadline, {"reminder": True}
            )
        )
        return now

    async def _routes(self, events: Sequence[Event]) -> list[list[tuple[str, str]]] | None:
        """Each event's deliveries (None: no router, nothing is queued)."""
        if self.route is None:
            return None
        return [list(await self.route(event)) for event in events]

    def _ours(self, events: Sequence[Event]) -> list[Event]:
        """The events, naming this poller's account (routes filter by it)."""
        name = self.account_name
        return [replace(e, account=name) if e.account != name else e for e in events]

    async def _save(self, changed: Sequence[tuple[TaskRecord, list[Event]]]) -> None:
        now = self.clock()
        changed = [(record, self._ours(events)) for record, events in changed]
        routes = await self._routes([event for _, events in changed for event in events])
        stored = await self.store.save_polls(
            changed, routes, now + self.group_wait_s, queued_at=now
        )
        self.last_saved_at = now
        for record, _ in changed:
            if record.task_id in self.records:
                if record.card is not None:  # the store has its text now
                    record.card = record.card.stored()
                self.records[record.task_id] = record
                self._index.update(Candidate.of(self.view(record), self.settings))
        if stored and self.on_events is not None:
            self.on_events(stored)

    # --- the operator's events -------------------------------------------------------

    def _operator_event(self, kind: EventKind, at: datetime, **details: object) -> None:
        """Found where nothing may wait (the quota's gate, the incident's
        bookkeeping): stored by the next _tell_operator(), before any poll's
        own events are."""
        self._for_operator.append(Event(kind, at, details=dict(details)))

    async def _tell_operator(self) -> None:
        events, self._for_operator = self._for_operator, []
        if not events:
            return
        try:
            await self.raise_events(self._ours(events))
        except BaseException:
            self._for_operator[:0] = events  # told once the store takes them
            raise

    async def raise_events(self, events: Sequence[Event]) -> None:
        """Record events that no poll raised (the operator's) and route them."""
        now = self.clock()
        routes = await self._routes(events)
        stored = await self.store.add_events(events, routes, now + self.group_wait_s, queued_at=now)
        if self.on_events is not None:
            self.on_events(stored)

    def _check_quota(self, *, answered: bool = False) -> None:
        """Whenever the ledger blocks polling, for any reason (0007, our own
        count, PlanFix's header), the operator hears of it once, with a
        WARNING; the end of the block is told too."""
        blocked = self.ledger.blocked()
        at = datetime.fromtimestamp(self.clock(), UTC)
        if blocked is None and self._quota_out and not answered:
            return  # a block that lapsed (a stale header, the reset) ends when PlanFix answers
        if blocked and not self._quota_out:
            self._quota_out = True
            resumes = min(self.ledger.next_probe_at() or self.ledger.resets_at,
                          self.ledger.resets_at)  # fmt: skip
            local = datetime.fromtimestamp(resumes, self.ledger.tz).strftime("%d.%m %H:%M")
            log.warning("polling blocked by the quota", reason=blocked)
            self._operator_event(
                EventKind.QUOTA_EXHAUSTED, at, reason=blocked, resets_at_local=local,
                resets_at=datetime.fromtimestamp(resumes, UTC).isoformat(),
            )  # fmt: skip
        elif not blocked and self._quota_out:
            self._quota_out = False
            log.info("polling unblocked: requests may go again")
            self._operator_event(EventKind.QUOTA_RESTORED, at)

    def _track(self, errors: Sequence[PlanfixError | None], now: float) -> None:
        """One request's outcome, for the operator's incident and the breaker."""
        self._track_incident(errors, now, datetime.fromtimestamp(now, UTC))
        self._track_breaker(errors, now)

    def _track_breaker(self, errors: Sequence[PlanfixError | None], now: float) -> None:
        """Any answer from PlanFix closes the breaker; a request that met only
        faults of the server opens it (or keeps it open, waiting longer)."""
        faults = [e for e in errors if e is not None and is_server_fault(e)]
        answered = [e for e in errors if e is None or e.error_class is ErrorClass.TASK]
        if answered and self.breaker.open:
            log.info("PlanFix answers again; every task back on its schedule")
            self.breaker.closed()
        elif faults and not answered:
            if not self.breaker.open and faults[0].error_class is ErrorClass.FATAL_CONFIG:
                log.error("PlanFix refuses us; polling waits for the operator (fix, then reload)",
                          error=faults[0].message)  # fmt: skip
            elif not self.breaker.open:
                log.warning("PlanFix is failing; probing it with one request at a time",
                            error=faults[0].message)  # fmt: skip
            self.breaker.failed(now, faults[0])

    @property
    def failing_fatally(self) -> str | None:
        """The error, while PlanFix refuses us for a reason only the operator can fix."""
        incident = self._incident
        return incident.last_error if incident is not None and incident.fatal else None

    def _track_incident(
        self, errors: Sequence[PlanfixError | None], now: float, at: datetime
    ) -> None:
        """PlanFix itself failing (every task in a request, not a task-level error)
        for longer than ``failing_after_s``, or a fatal error at once, is told to
        the operator once; its end is told too."""
        relevant = [
            e for e in errors if not (e and e.error_class in (ErrorClass.TASK, ErrorClass.QUOTA))
        ]
        if not relevant:
            return
        failures = [e for e in relevant if e is not None]
        if len(failures) < len(relevant):  # something worked
            if self._incident is not None and self._incident.reported:
                self._operator_event(EventKind.PLANFIX_RECOVERED, at)
            self._incident = None
            return
        error = failures[0]
        incident = self._incident or _Incident(since=now)
        incident.last_error = error.message
        self._incident = incident
        fatal = error.error_class is ErrorClass.FATAL_CONFIG
        incident.fatal = fatal
        if not incident.reported and (fatal or now - incident.since >= self.failing_after_s):
            incident.reported = True
            self._operator_event(
                EventKind.PLANFIX_FAILING,
                at,
                error=error.message,
                error_class=error.error_class.value,
                code=getattr(error, "code", None),
                since=datetime.fromtimestamp(incident.since, UTC).isoformat(),
            )


def _unread(result: PollResult) -> bool:
    """PlanFix or the quota kept this task from being read (not its own error)."""
    error = result.error
    return result.outcome == "quota" or (error is not None and is_server_fault(error))
