"""Instances sharing one outbox in PostgreSQL: each delivery is sent once,
each task's alerts in order, and the work is spread between them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings
from notifier.channels.base import Delivered, Message, RetryLater, SendResult
from notifier.ops.leases import SharedLeases
from notifier.store import Store, StoreError
from notifier.store.postgres import PostgresDatabase
from tests import postgres
from tests.alerts.recording import Recording
from tests.alerts.samples import event, summary

SENT: list[tuple[str, str, int, str]] = []  # (instance, recipient, task, title), as sent


class Shared(Recording):
    def __init__(self, instance: str) -> None:
        super().__init__("hook", recipients=("r1", "r2"), group=False, order="task", parallel=4)
        self.instance = instance
        self.delay_s = 0.01

    async def send(self, message: Message) -> SendResult:
        result = await super().send(message)
        if isinstance(result, Delivered):
            SENT.extend(
                (self.instance, message.recipient, e.task_id or 0, e.task.title if e.task else "")
                for e in message.events
            )
        return result


@pytest.fixture
async def stores() -> AsyncIterator[list[Store]]:
    if (why := postgres.reachable()) is not None:
        pytest.fail(why)
    with postgres.fresh_schema() as schema:
        opened = [Store(PostgresDatabase(postgres.URL, schema, pool_size=3)) for _ in range(3)]
        yield opened
        for store in opened:
            await store.close()


async def test_three_instances_send_each_delivery_once_and_each_task_in_order(
    stores: list[Store],
) -> None:
    SENT.clear()
    now = time.time()
    tasks, steps = 30, 3
    for step in range(steps):  # each task changes three times: its alerts must keep that order
        events = [
            event(task_id=1000 + n, task=summary(1000 + n, title=f"{n}:{step}"))
            for n in range(tasks)
        ]
        routes = [[("hook", "r1"), ("hook", "r2")] for _ in events]
        await stores[0].add_events(events, routes, now, queued_at=now)
    dispatchers = [
        Dispatcher(
            store,
            {"hook": Shared(f"i{n}")},
            DispatchSettings(),
            leases=SharedLeases(store, 10.0, holder=f"i{n}"),
        )
        for n, store in enumerate(stores)
    ]
    for each in dispatchers:
        each.start()
    deadline = time.monotonic() + 60
    while (await stores[0].outbox_counts()).get("pending", 0):
        assert time.monotonic() < deadline, "not all sent"
        await asyncio.sleep(0.05)
    for each in dispatchers:
        await each.stop()

    sent = [(recipient, title) for _, recipient, _, title in SENT]
    assert len(sent) == tasks * steps * 2 and len(set(sent)) == len(sent)  # once each
    for recipient in ("r1", "r2"):
        for n in range(tasks):
            told = [t for r, t in sent if r == recipient and t.startswith(f"{n}:")]
            assert told == [f"{n}:{step}" for step in range(steps)], (recipient, told)
    by_instance = {instance for instance, *_ in SENT}
    assert len(by_instance) >= 2  # shared, not one doing it all
    assert await stores[1].leases("lane:") == []  # every lane given back


class Slow(Shared):
    def __init__(self, instance: str) -> None:
        super().__init__(instance)
        self.options = self.options.model_copy(update={"order": "recipient"})
        self.delay_s = 1.0  # a slow webhook: one lane's pass outlives the lease


async def test_a_pass_longer_than_the_lease_keeps_its_lane(stores: list[Store]) -> None:
    """The lane's lease is renewed while its pass lasts: an instance starting
    meanwhile finds it held, and sends nothing of it twice or out of order."""
    SENT.clear()
    now = time.time()
    for step in range(5):
        one = event(task_id=1001, task=summary(1001, title=f"step {step}"))
        await stores[0].add_events([one], [[("hook", "r1")]], now, queued_at=now)
    first, second = (
        Dispatcher(
            store,
            {"hook": Slow(name)},
            DispatchSettings(),
            leases=SharedLeases(store, 3.0, holder=name),
        )
        for name, store in (("i0", stores[0]), ("i1", stores[1]))
    )
    first.start()
    await asyncio.sleep(3.5)  # i0 is in its pass, past its first lease
    second.start()
    deadline = time.monotonic() + 30
    while (await stores[0].outbox_counts()).get("pending", 0):
        assert time.monotonic() < deadline, "not all sent"
        await asyncio.sleep(0.1)
    for each in (first, second):
        await each.stop(grace_s=5)
    assert [title for *_, title in SENT] == [f"step {n}" for n in range(5)], SENT


async def test_a_drain_ends_once_nothing_is_left(stores: list[Store]) -> None:
    """(Shared, a pass looks again every few seconds for what others queued;
    a drain at stop must not wait for that.)"""
    now = time.time()
    await stores[0].add_events([event()], [[("hook", "r1")]], now, queued_at=now)
    hook = Shared("i0")
    dispatcher = Dispatcher(
        stores[0], {"hook": hook}, DispatchSettings(), leases=SharedLeases(stores[0], 20.0)
    )
    started = time.monotonic()
    assert await dispatcher.drain(20.0) == 0
    assert time.monotonic() - started < 3 and len(hook.sent) == 1


async def test_a_lane_failing_ends_its_pass_only_when_the_others_have(
    stores: list[Store],
) -> None:
    """The store failing for one lane (a failover): the pass ends when every
    other lane has, its leases given back, so none goes on sending unowned
    beside the next pass (which would take the same lane and send it again)."""
    SENT.clear()
    now = time.time()
    for step in range(2):
        one = event(task_id=1001, task=summary(1001, title=f"step {step}"))
        await stores[0].add_events([one], [[("hook", "r1"), ("hook", "r2")]], now, queued_at=now)
    hook = Shared("i0")
    hook.delay_s = 0.3
    hook.script = [RetryLater("the recipient is busy")]  # r1's first send
    dispatcher = Dispatcher(
        stores[0], {"hook": hook}, DispatchSettings(), leases=SharedLeases(stores[0], 20.0)
    )
    retry = stores[0].outbox_retry

    async def failover(*args: Any, **kwargs: Any) -> None:
        raise StoreError("PostgreSQL 127.0.0.1:5432/test: the server closed the connection")

    stores[0].outbox_retry = failover  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await dispatcher.flush("hook")
    stores[0].outbox_retry = retry  # type: ignore[method-assign]
    assert [title for _, recipient, _, title in SENT if recipient == "r2"] == ["step 0", "step 1"]
    assert await stores[0].leases("lane:") == []
