"""Instances sharing one outbox in PostgreSQL: each delivery is sent once,
each task's alerts in order, and the work is spread between them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings
from notifier.channels.base import Delivered, Message, SendResult
from notifier.ops.leases import SharedLeases
from notifier.store import Store
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
    assert by_instance == {"i0", "i1", "i2"}  # shared, not one doing it all
    assert await stores[1].leases("lane:") == []  # every lane given back
