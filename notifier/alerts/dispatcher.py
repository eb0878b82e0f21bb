"""The outbox sender: one worker per channel, so a channel that is down never
delays another. Each worker takes its channel's pending deliveries, per
recipient and in order, and:

1. gives up on deliveries older than the channel's ``max_age_s`` (dead letter);
2. in quiet hours holds back all but urgent ones until the window ends;
3. sends what is due as one message (a digest) — or one per event where the
   channel has ``group = false``;
4. marks them sent, or schedules a retry (the service's own time, or
   exponential back-off with jitter), or makes them dead letters with the
   reason when the failure is for good.

A recipient's queue (a task's, with ``order = "task"`` and no grouping)
waits behind its oldest delivery, so alerts never overtake each other: that
queue is a lane. Up to ``parallel`` lanes are sent at once. Where
several instances share the state, a lane is sent only by the instance that
holds its lease, taken for each pass: two never send the same delivery (but
one in flight when its sender died is sent again by the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..channels.base import (
    Channel,
    Delivered,
    FailedForGood,
    Message,
    Misconfigured,
    RetryLater,
    SendResult,
    quiet_window,
)
from ..ops import logging as oplog
from ..ops.leases import Leases, OwnLeases
from ..store import OutboxRow, Store, StoreError
from .events import Event

log = oplog.get(__name__)
IDLE_S = 60.0
LANES_PER_SLOT = 2  # lanes one pass takes, per send it may have under way
SHARED_LOOK_S = 5.0  # shared: the outbox looked at this often (others queue, and hold lanes)
MISCONFIGURED_RETRY_S = 600.0  # a channel the operator must fix is tried this rarely


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    retry_base_s: float = 10.0
    retry_max_s: float = 1800.0
    urgent_importance: tuple[str, ...] = ("HIGH",)
    urgent_events: tuple[str, ...] = ()
    timezone: str = "Europe/Moscow"


def backoff(attempts: int, settings: DispatchSettings, rng: random.Random) -> float:
    """Exponential, capped, with ±20 % jitter so retries do not arrive in step."""
    delay = min(settings.retry_base_s * 2.0 ** min(attempts, 30), settings.retry_max_s)
    return delay * rng.uniform(0.8, 1.2)


def quiet_until(window: str, zone: ZoneInfo, now: float) -> float | None:
    """If ``now`` falls in the window ``HH:MM-HH:MM`` (it may span midnight),
    when it ends; else None."""
    start, end = quiet_window(window)
    local = datetime.fromtimestamp(now, zone)
    today = local.date()
    if start <= end:
        if start <= local.time() < end:
            return datetime.combine(today, end, zone).timestamp()
        return None
    if local.time() >= start:
        return datetime.combine(today + timedelta(days=1), end, zone).timestamp()
    if local.time() < end:
        return datetime.combine(today, end, zone).timestamp()
    return None


FailureHook = Callable[[str, str, str], Awaitable[None]]  # (channel, recipient, reason)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        settings: DispatchSettings,
        *,
        clock: Callable[[], float] = time.time,
        on_failed: FailureHook | None = None,
        on_delivered: Callable[[str, str], Awaitable[None]] | None = None,
        on_result: Callable[[str, str], None] | None = None,
        seed: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        leases: Leases | None = None,
    ) -> None:
        self.store = store
        self.leases = leases or OwnLeases()
        self.channels = channels
        self.settings = settings
        self.clock = clock
        self.on_failed = on_failed
        self.on_delivered = on_delivered
        self.on_result = on_result  # (channel, delivered|retry|dead), for metrics
        self.on_latency: Callable[[str, float], None] | None = None  # (channel, event → sent)
        self.rng = random.Random(seed)  # noqa: S311 - jitter, not a secret
        self._wake: dict[str, asyncio.Event] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False
        # Delivered, but the store could not record it (a full disk): held as
        # sent here, so the record is retried and never the send.
        self._unrecorded: dict[int, float] = {}
        # Health: since when each failing channel has delivered nothing.
        self.monotonic = monotonic
        self._failing_since: dict[str, float] = {}
        self._misconfigured: dict[str, str] = {}  # channel → what the operator must fix
        # A recipient that cannot take a message now, in this pass: its other
        # lanes wait as long (not one failing request per task).
        self._busy_until: dict[tuple[str, str], float] = {}

    # --- running -------------------------------------------------------------------------

    def start(self) -> None:
        for name in self.channels:
            self._wake[name] = asyncio.Event()
            self._workers.append(asyncio.create_task(self._worker(name), name=f"outbox-{name}"))

    def wake(self, channel: str | None = None) -> None:
        """New deliveries were written: look again now."""
        for name, event in self._wake.items():
            if channel is None or name == channel:
                event.set()

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop the workers. No new send starts; one under way may finish for
        up to ``grace_s`` — cancelled, it would be sent again later (its
        result never recorded), a duplicate the receiver sees."""
        self._stopping = True
        for wake in self._wake.values():
            wake.set()
        pending = set(self._workers)
        if pending and grace_s > 0:
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        for worker in pending:
            worker.cancel()
        for worker in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers.clear()
        self._stopping = False  # drain() may send again

    async def drain(self, timeout_s: float) -> int:
        """Send what is due, on every channel at once, until nothing is or
        ``timeout_s`` passes — a send still waiting then (on a rate limit, a
        slow server) is abandoned; return what is still pending (it stays in
        the outbox for the next start)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(self._drain(name, timeout_s) for name in self.channels))
        return (await self.store.outbox_counts()).get("pending", 0)

    async def _drain(self, name: str, timeout_s: float) -> None:
        deadline = self.monotonic() + timeout_s
        while True:
            wait = await self.flush(name)
            if wait >= min(IDLE_S, deadline - self.monotonic()):
                return
            await asyncio.sleep(max(0.05, wait))

    async def _worker(self, name: str) -> None:
        wake = self._wake[name]
        while not self._stopping:
            try:
                wait = await self.flush(name)
            except Exception:  # a bug must not end deliveries for good
                log.exception("outbox flush failed", channel=name)
                wait = IDLE_S
            if self._stopping:
                return
            if self.leases.shared:  # what another instance queued, or a lane it let go
                wait = min(wait, SHARED_LOOK_S)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(wait, 0.01))

    # --- one pass ------------------------------------------------------------------------

    async def flush(self, name: str) -> float:
        """Deliver what is due on one channel; return seconds until the next is."""
        channel = self.channels[name]
        await self._record_held()
        now = self.clock()
        lanes = self._lanes(channel, await self.store.outbox_pending(name))
        heads = {key: min(r.next_attempt_at for r in rows) for key, rows in lanes.items()}
        due = {key: lanes[key] for key, head in heads.items() if head <= now}
        waits = [head - now for head in heads.values() if head > now]
        self._busy_until = {k: v for k, v in self._busy_until.items() if k[0] != name}
        held: set[str] = set()  # the lanes' leases this pass holds (shared)
        keeping: asyncio.Task[None] | None = None
        try:
            if self.leases.shared and due:
                due = await self._claim(channel, due, held)
                keeping = asyncio.create_task(self._keep_lanes(held))
            room = asyncio.Semaphore(channel.options.parallel)
            # Every lane ends before the pass does (a failing one too): none
            # goes on sending unowned beside the next pass.
            ended = await asyncio.gather(
                *(self._lane(channel, key, rows, room, held) for key, rows in due.items()),
                return_exceptions=True,
            )
        finally:
            if keeping is not None:
                keeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeping
            if held:
                await self.leases.give_back(*held)
        failed = [e for e in ended if isinstance(e, BaseException)]
        if failed:
            raise failed[0]
        return min([IDLE_S, *waits, *(wait for wait in ended if isinstance(wait, float))])

    async def _claim(
        self, channel: Channel, due: dict[str, list[OutboxRow]], held: set[str]
    ) -> dict[str, list[OutboxRow]]:
        """Take the leases of due lanes no other instance holds, oldest first,
        two per send slot (more would wait, held from the others, for a slot);
        then read their rows again: one may have been sent meanwhile. The
        lanes taken (added to ``held`` as they are), with their rows."""
        now = self.clock()
        others = {
            name
            for name, holder, _, expires in await self.store.leases(f"lane:{channel.name}:")
            if expires >= now and holder != self.leases.holder
        }
        for key in due:
            if len(held) >= channel.options.parallel * LANES_PER_SLOT:
                break
            if key in others:
                continue
            held.add(key)  # (first: taken, then cancelled, it is still given back)
            if not await self.leases.take(key):
                held.discard(key)
        rows = [row for key in held for row in due[key]]
        pending = await self.store.outbox_still_pending([row.id for row in rows])
        fresh: dict[str, list[OutboxRow]] = {}
        for key in [key for key in due if key in held]:  # (oldest first)
            kept = [
                dataclasses.replace(
                    row,
                    next_attempt_at=pending[row.id][0],
                    attempts=pending[row.id][1],
                    last_error=pending[row.id][2],
                )
                for row in due[key]
                if row.id in pending
            ]
            if kept:
                fresh[key] = kept
        sent_meanwhile = [key for key in held if key not in fresh]
        await self.leases.give_back(*sent_meanwhile)  # (cancelled: the pass gives them back)
        held.difference_update(sent_meanwhile)
        return fresh

    async def _keep_lanes(self, held: set[str]) -> None:
        """Renew the lanes of a pass while it lasts (a slow recipient, a
        paced chat), in one statement: another instance takes a lane only
        once it has expired."""
        while True:
            await asyncio.sleep(self.leases.lease_s / 3)
            renewed = await self.leases.renew(sorted(held))
            ended = [key for key in renewed if key not in held]  # done while renewed
            await self.leases.give_back(*ended)

    def _lanes(self, channel: Channel, rows: Sequence[OutboxRow]) -> dict[str, list[OutboxRow]]:
        """The rows by lane, each oldest first; keyed by the lane's lease name."""
        lanes: dict[str, list[OutboxRow]] = {}
        for row in rows:
            if row.id in self._unrecorded:
                continue
            key = f"lane:{channel.name}:{row.recipient}"
            if channel.options.order == "task" and not channel.options.group:
                task = row.event.task_id
                of = f"{row.event.account}/" if row.event.account else ""  # (ids are an account's)
                key += f":{of}{task}" if task is not None else ":-"
            lanes.setdefault(key, []).append(row)
        return lanes

    async def _lane(
        self,
        channel: Channel,
        key: str,
        rows: list[OutboxRow],
        room: asyncio.Semaphore,
        held: set[str],
    ) -> float:
        try:
            async with room:
                busy = self._busy_until.get((channel.name, rows[0].recipient))
                if busy is not None:
                    await self.store.outbox_retry([r.id for r in rows], busy, None, attempt=False)
                    return busy - self.clock()
                return await self._recipient(channel, rows, key)
        finally:
            if key in held:  # given back as soon as it is done: the next may take it
                await self.leases.give_back(key)  # (cancelled: the pass gives it back)
                held.discard(key)

    async def _recipient(self, channel: Channel, rows: list[OutboxRow], key: str = "") -> float:
        now = self.clock()
        head = min(row.next_attempt_at for row in rows)
        if head > now:
            return head - now
        expired = [r for r in rows if now - r.created_at > channel.options.max_age_s]
        if expired:
            reason = f"gave up after {expired[0].attempts} attempts: {expired[0].last_error or '?'}"
            await self.store.outbox_dead([r.id for r in expired], reason, now)
            await self._failed(channel.name, rows[0].recipient, reason)
            rows = [r for r in rows if r not in expired]
        rows = await self._outside_quiet_hours(channel, rows, now)
        batches = [rows] if channel.options.group else [[row] for row in rows]
        for n, batch in enumerate(batches):
            if not batch or self._stopping:
                continue
            if not self.leases.holds(key):  # renewals failed: another may take the lane now
                break
            behind = [row for later in batches[n + 1 :] for row in later]
            result = await self._send(channel, batch, behind)
            if not isinstance(result, Delivered):
                break  # the rest waits behind it: order per recipient holds
        return 0.0 if rows else IDLE_S

    async def _outside_quiet_hours(
        self, channel: Channel, rows: list[OutboxRow], now: float
    ) -> list[OutboxRow]:
        window = channel.options.quiet_hours
        if window is None:
            return rows
        zone = ZoneInfo(channel.options.quiet_timezone or self.settings.timezone)
        ends = quiet_until(window, zone, now)
        if ends is None:
            return rows
        urgent = [r for r in rows if channel.options.urgent_passes_quiet and self.urgent(r.event)]
        held = [r.id for r in rows if r not in urgent]
        await self.store.outbox_retry(held, ends, None, attempt=False)
        return urgent

    def urgent(self, event: Event) -> bool:
        if event.kind.value in self.settings.urgent_events:
            return True
        return event.task is not None and event.task.importance in self.settings.urgent_importance

    async def _send(
        self, channel: Channel, batch: Sequence[OutboxRow], behind: Sequence[OutboxRow] = ()
    ) -> SendResult:
        """Send one message; when the recipient cannot take it now, the
        deliveries ``behind`` it wait as long (order holds, and nothing is
        sent while the head of the line waits)."""
        recipient = batch[0].recipient
        message = Message(channel.name, recipient, tuple(r.event for r in batch))
        try:
            result = await channel.send(message)
        except Exception as exc:  # a channel bug is a retry, not a lost alert
            log.exception("the channel raised while sending", channel=channel.name)
            result = RetryLater(f"the channel failed: {type(exc).__name__}")
        now = self.clock()
        if not isinstance(result, Delivered) and result.sent_events:
            # Sent in parts and cut short: what did go out is recorded as
            # sent, so that a retry (or a dead letter) is only for the rest.
            await self._record_sent([r.id for r in batch[: result.sent_events]], now)
            batch = batch[result.sent_events :]
        ids = [r.id for r in batch]
        kind = {
            Delivered: "delivered",
            RetryLater: "retry",
            FailedForGood: "dead",
            Misconfigured: "misconfigured",
        }[type(result)]
        log.debug("delivery", channel=channel.name, events=len(batch), result=kind)
        if self.on_result is not None:
            self.on_result(channel.name, kind)
        self._note_progress(channel.name, result)
        if isinstance(result, Delivered):
            await self._record_sent(ids, now)
            if self.on_latency is not None:  # from when it was queued (or retried by hand)
                for row in batch:
                    self.on_latency(channel.name, now - row.created_at)
            if self.on_delivered is not None:
                await self.on_delivered(channel.name, recipient)
        elif isinstance(result, RetryLater):
            attempts = max(r.attempts for r in batch)
            delay = (
                result.after_s
                if result.after_s is not None
                else backoff(attempts, self.settings, self.rng)
            )
            self._busy_until[(channel.name, recipient)] = now + delay
            await self.store.outbox_retry(ids, now + delay, result.reason)
            await self.store.outbox_retry([r.id for r in behind], now + delay, None, attempt=False)
        elif isinstance(result, FailedForGood):
            await self.store.outbox_dead(ids, result.reason, now)
            await self._failed(channel.name, recipient, result.reason)
        else:  # Misconfigured: kept, not a failed attempt; tried again rarely, or after a reload
            later = now + MISCONFIGURED_RETRY_S
            self._busy_until[(channel.name, recipient)] = later
            await self.store.outbox_retry(ids, later, result.reason, attempt=False)
            await self.store.outbox_retry([r.id for r in behind], later, None, attempt=False)
            await self._failed(
                channel.name, recipient, result.reason, logged=True
            )  # _note_progress
        return result

    def _note_progress(self, name: str, result: SendResult) -> None:
        """One log line when a channel starts failing to deliver, one when it
        delivers again (a retry forever used to write nothing at WARNING)."""
        if isinstance(result, Delivered):
            was_failing = self._failing_since.pop(name, None) is not None
            if self._misconfigured.pop(name, None) is not None or was_failing:
                log.info("channel delivers again", channel=name)
        elif isinstance(result, Misconfigured) and name not in self._misconfigured:
            self._misconfigured[name] = result.reason
            log.error("channel misconfigured; its deliveries wait for a fixed configuration",
                      channel=name, error=result.reason)  # fmt: skip
        elif isinstance(result, RetryLater) and name not in self._failing_since:
            self._failing_since[name] = self.monotonic()
            log.warning("channel cannot deliver now; retrying", channel=name, error=result.reason)

    def stuck(self, after_s: float) -> list[tuple[str, float]]:
        """Channels that have failed to deliver, with nothing delivered since,
        for over ``after_s``."""
        now = self.monotonic()
        return [(n, now - at) for n, at in self._failing_since.items() if now - at > after_s]

    @property
    def misconfigured(self) -> dict[str, str]:
        """Channels that need the operator: name → the reason, naming the key."""
        return dict(self._misconfigured)

    def carry_over(self, old: Dispatcher) -> None:
        """A reload's new dispatcher keeps what the old one knew: deliveries
        sent but not yet recorded (else sent again) and failing channels."""
        self._unrecorded.update(old._unrecorded)
        self._failing_since.update(
            {n: at for n, at in old._failing_since.items() if n in self.channels}
        )

    @property
    def unrecorded(self) -> int:
        """Deliveries sent but not yet recorded as sent (for health)."""
        return len(self._unrecorded)

    async def _record_sent(self, ids: Sequence[int], now: float) -> None:
        # A write that fails, or is cancelled (a stop, a reload) while the
        # store answers, is held as sent and retried; the send never.
        try:
            await self.store.outbox_sent(ids, now)
        except StoreError as exc:
            if not self._unrecorded:
                log.error("sent, but the state cannot record it; holding it as sent and "
                          "retrying the record", error=str(exc))  # fmt: skip
            self._unrecorded.update(dict.fromkeys(ids, now))
        except BaseException:
            self._unrecorded.update(dict.fromkeys(ids, now))
            raise

    async def _record_held(self) -> None:
        if not self._unrecorded:
            return
        held = dict(self._unrecorded)  # (workers of other channels record beside this one)
        try:
            for sent_at in sorted(set(held.values())):
                ids = [i for i, at in held.items() if at == sent_at]
                await self.store.outbox_sent(ids, sent_at)
                for i in ids:
                    self._unrecorded.pop(i, None)
        except StoreError:
            return  # still cannot write: kept, tried again on the next pass
        log.info("the state records deliveries again")

    async def _failed(
        self, channel: str, recipient: str, reason: str, *, logged: bool = False
    ) -> None:
        if not logged:
            log.warning(
                "channel cannot deliver", channel=channel, recipient=recipient, error=reason
            )
        if self.on_failed is not None:
            await self.on_failed(channel, recipient, reason)
