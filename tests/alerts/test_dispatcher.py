"""The outbox sender: digests, order, retries, dead letters, quiet hours,
isolation between channels, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings, quiet_until
from notifier.alerts.events import Event
from notifier.channels.base import (
    Channel,
    FailedForGood,
    Misconfigured,
    RetryLater,
)
from notifier.store import Store
from tests.alerts.recording import Recording
from tests.alerts.samples import MSK, event, summary
from tests.watch.clock import FakeClock

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=MSK)


async def enqueue(
    store: Store,
    channels: Sequence[Recording],
    events: Sequence[Event],
    now: float,
    wait_s: float = 0.0,
) -> None:
    """Queue ``events`` at ``now`` for every recipient, due ``wait_s`` later."""

    def route(ev: Event) -> list[tuple[str, str]]:
        return [(c.name, r) for c in channels for r in c.recipients()]

    routes = [route(ev) for ev in events]
    await store.add_events(events, routes, now + wait_s, queued_at=now)


def titled(n: int, **fields: Any) -> Event:
    return event(task_id=1000 + n, task=summary(1000 + n, title=f"Задача {n}", **fields))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.sqlite3")


def dispatcher(store: Store, *channels: Channel, clock: FakeClock, **settings: Any) -> Dispatcher:
    failures: list[tuple[str, str, str]] = []

    async def failed(*args: str) -> None:
        failures.append(args)  # type: ignore[arg-type]

    made = Dispatcher(
        store,
        {c.name: c for c in channels},
        DispatchSettings(**settings),
        clock=clock,
        on_failed=failed,
        seed=1,
    )
    made.failures = failures  # type: ignore[attr-defined]
    return made


async def test_a_burst_becomes_one_digest_in_order(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team")
    await enqueue(store, [team], [titled(i) for i in range(20)], clock.now, wait_s=30)
    assert await dispatcher(store, team, clock=clock).flush("team") == pytest.approx(30)
    assert team.sent == []  # group_wait: not yet
    clock.advance(30)
    await dispatcher(store, team, clock=clock).flush("team")
    assert team.titles() == [[f"Задача {i}" for i in range(20)]]
    assert await store.outbox_counts() == {"sent": 20}


async def test_without_grouping_one_message_per_event(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team", group=False)
    await enqueue(store, [team], [titled(i) for i in range(3)], clock.now)
    await dispatcher(store, team, clock=clock).flush("team")
    assert team.titles() == [["Задача 0"], ["Задача 1"], ["Задача 2"]]


async def test_retry_with_backoff_then_in_order(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team")
    team.script = [RetryLater("down"), RetryLater("still down")]
    sender = dispatcher(store, team, clock=clock, retry_base_s=10)
    await enqueue(store, [team], [titled(1)], clock.now)
    first_wait = await sender.flush("team")
    assert 8 <= await sender.flush("team") <= 12 and first_wait == 0  # base 10 s ± 20 %
    await enqueue(store, [team], [titled(2)], clock.now)  # arrives meanwhile: waits behind
    clock.advance(12)
    await sender.flush("team")
    assert 16 <= await sender.flush("team") <= 24 + 12  # doubled
    clock.advance(25)
    await sender.flush("team")
    assert team.titles() == [["Задача 1", "Задача 2"]]


async def test_the_services_retry_time_is_honoured(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team")
    team.script = [RetryLater("429", after_s=42)]
    sender = dispatcher(store, team, clock=clock)
    await enqueue(store, [team], [titled(1)], clock.now)
    await sender.flush("team")
    assert await sender.flush("team") == pytest.approx(42)


async def test_failed_for_good_is_a_dead_letter_with_its_reason(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team", recipients=("blocked", "fine"))
    team.script = [FailedForGood("bot was blocked")]
    sender = dispatcher(store, team, clock=clock)
    await enqueue(store, [team], [titled(1)], clock.now)
    await sender.flush("team")
    assert await store.outbox_counts() == {"dead": 1, "sent": 1}
    ((channel, recipient, reason, _),) = await store.dead_letters()
    assert (channel, reason) == ("team", "bot was blocked")
    assert sender.failures == [("team", recipient, "bot was blocked")]  # type: ignore[attr-defined]


async def test_too_old_becomes_a_dead_letter(store: Store) -> None:
    clock = FakeClock(NOW)
    team = Recording("team", max_age_s=3600)
    team.script = [RetryLater("down")] * 100
    sender = dispatcher(store, team, clock=clock, retry_max_s=600)
    await enqueue(store, [team], [titled(1)], clock.now)
    for _ in range(20):
        await sender.flush("team")
        clock.advance(600)
    assert await store.outbox_counts() == {"dead": 1}
    reason = (await store.dead_letters())[0][2]
    assert "gave up after" in reason and "down" in reason


async def test_a_change_found_after_days_of_downtime_is_still_delivered(store: Store) -> None:
    """``max_age_s`` counts from when the delivery was queued, not from when
    PlanFix changed the task (the event's own time)."""
    clock = FakeClock(NOW)
    team = Recording("team", max_age_s=2 * 86400)
    three_days_ago = datetime.fromtimestamp(clock.now - 3 * 86400, MSK)
    await enqueue(store, [team], [replace(titled(1), at=three_days_ago)], clock.now)
    await dispatcher(store, team, clock=clock).flush("team")
    assert team.titles() == [["Задача 1"]]
    assert await store.outbox_counts() == {"sent": 1}


async def test_quiet_hours_defer_and_then_send_one_digest(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 23, 0, tzinfo=MSK))
    night = Recording("night", quiet_hours="22:00-08:00")
    sender = dispatcher(store, night, clock=clock)
    urgent = titled(9, importance="HIGH")
    await enqueue(store, [night], [titled(1), urgent, titled(2)], clock.now)
    await sender.flush("night")
    assert night.titles() == [["Задача 9"]]  # urgent passes
    morning = datetime(2026, 11, 24, 8, 0, tzinfo=MSK).timestamp()
    assert await sender.flush("night") == pytest.approx(min(60, morning - clock.now))
    clock.advance(morning - clock.now)
    await sender.flush("night")
    assert night.titles() == [["Задача 9"], ["Задача 1", "Задача 2"]]
    assert await store.outbox_counts() == {"sent": 3}


def at(hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, 23, hour, minute, tzinfo=MSK).timestamp()


def test_quiet_windows() -> None:
    assert (
        quiet_until("22:00-08:00", MSK, at(23))
        == datetime(2026, 11, 24, 8, 0, tzinfo=MSK).timestamp()
    )
    assert quiet_until("22:00-08:00", MSK, at(3)) == at(8)
    assert quiet_until("22:00-08:00", MSK, at(12)) is None
    assert quiet_until("13:00-14:00", MSK, at(13, 30)) == at(14)
    assert quiet_until("13:00-14:00", MSK, at(14)) is None


async def test_a_channel_that_is_down_never_delays_another(store: Store) -> None:
    slow, fast = Recording("slow"), Recording("fast")
    slow.delay_s = 3
    slow.script = [RetryLater("timeout")]
    sender = Dispatcher(store, {"slow": slow, "fast": fast}, DispatchSettings())
    sender.start()
    try:
        await enqueue(store, [slow, fast], [titled(1)], sender.clock())
        sender.wake()
        started = time.monotonic()
        await asyncio.wait_for(fast.delivered.wait(), timeout=2)
        assert time.monotonic() - started < 1
        assert not slow.sent
    finally:
        await sender.stop()


async def test_pending_deliveries_resume_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    team = Recording("team")
    first = Store(tmp_path / "s.sqlite3")
    await enqueue(first, [team], [titled(1), titled(2)], clock.now)
    await first.close()
    second = Store(tmp_path / "s.sqlite3")
    await dispatcher(second, team, clock=clock).flush("team")
    assert team.titles() == [["Задача 1", "Задача 2"]]


async def test_drain_sends_what_is_due(store: Store) -> None:
    team = Recording("team")
    sender = Dispatcher(store, {"team": team}, DispatchSettings())  # on the real clock
    await enqueue(store, [team], [titled(1)], sender.clock())
    assert await sender.drain(5) == 0
    assert team.titles() == [["Задача 1"]]


async def test_drain_keeps_its_deadline_and_drains_channels_side_by_side(store: Store) -> None:
    stuck, team = Recording("stuck"), Recording("team")
    stuck.delay_s = 3600  # a send waiting on a rate limit or a hung server
    sender = Dispatcher(store, {"stuck": stuck, "team": team}, DispatchSettings())
    await enqueue(store, [stuck, team], [titled(1)], sender.clock())
    left = await asyncio.wait_for(sender.drain(0.5), 10)  # the guard: a hang fails, not blocks
    assert left == 1 and team.titles() == [["Задача 1"]] and stuck.sent == []


@pytest.mark.parametrize(
    "refusal",
    [RetryLater("busy", 30.0), Misconfigured("a configuration error: check channels.team")],
)
async def test_one_message_at_a_time_waits_behind_a_refused_head(
    store: Store, refusal: RetryLater | Misconfigured
) -> None:
    """With group = false, the head of a recipient's line was pushed back,
    but the next one was due, so the head went again at once: 48 sends in
    half a second. Now the whole line waits as long as its head."""
    clock = FakeClock(NOW)
    team = Recording("team", group=False)
    await enqueue(store, [team], [titled(n) for n in range(3)], clock.now)
    team.script = [refusal] * 10
    sender = dispatcher(store, team, clock=clock)
    for _ in range(5):
        await sender.flush("team")
    assert len(team.script) == 9  # one attempt, whatever the passes
    clock.advance(601)
    team.script = []
    await sender.flush("team")
    assert team.titles() == [["Задача 0"], ["Задача 1"], ["Задача 2"]]


class YieldingStore(Store):
    """A store whose writes give the loop a turn, as PostgreSQL's do."""

    async def outbox_sent(self, ids: Sequence[int], now: float) -> None:
        await asyncio.sleep(0)
        await super().outbox_sent(ids, now)


async def test_deliveries_held_as_sent_are_recorded_once_by_workers_side_by_side(
    tmp_path: Path,
) -> None:
    """Sent, then the state could not record it: each channel's worker
    records what is held, side by side. On PostgreSQL both read the same ids
    and the second deleted them again: KeyError, the worker idle for a minute."""
    clock = FakeClock(NOW)
    store = YieldingStore(tmp_path / "state.sqlite3")
    team, mail = Recording("team"), Recording("mail")
    await enqueue(store, [team, mail], [titled(1), titled(2)], clock.now)
    sender = dispatcher(store, team, mail, clock=clock)
    held = [row.id for name in ("team", "mail") for row in await store.outbox_pending(name)]
    sender._unrecorded.update(dict.fromkeys(held, clock.now))  # as after a failed write
    await asyncio.gather(sender.flush("team"), sender.flush("mail"))
    assert sender.unrecorded == 0 and await store.outbox_counts() == {"sent": 4}
    assert team.sent == [] and mail.sent == []  # held as sent: never sent again
