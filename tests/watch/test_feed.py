"""The change feed against the emulator: a change anywhere is seen within a
look, whatever the task's turn in the plan; the overlap never alerts twice;
a silent change is left to the safety net; a server without feeds falls back."""

from __future__ import annotations

from datetime import datetime

import structlog

from notifier.alerts.events import EventKind
from notifier.watch.feed import PAGES_PER_ROUND, FeedMode
from tests.watch.test_poller import MSK, Harness, harness

__all__ = ["harness"]  # the fixture

TASKS = 300


def _tasks(harness: Harness, n: int = TASKS) -> list[int]:
    return [harness.control.create_task(title=f"Лента {i}", status=1)["id"] for i in range(n)]


def changed(harness: Harness) -> list[int]:
    return [e.task_id or 0 for e in harness.events if e.kind is EventKind.STATUS_CHANGED]


async def test_a_change_is_seen_within_a_look_whatever_its_turn(harness: Harness) -> None:
    """300 tasks, 2,000 requests a day, task.get only: each task's own turn
    comes hours apart, the feed's look every minute."""
    harness.control.configure(daily_quota=2000, supports_multi=False)
    tasks = _tasks(harness)
    service = await harness.service(tasks, daily_quota=2000)
    await harness.settle(service, 600)
    assert service.feed.mode is FeedMode.CARDS
    target = tasks[137]
    harness.control.change_task(target, status=2)
    await harness.settle(service, 90)
    assert changed(harness) == [target]
    await harness.settle(service, 1800)  # looks overlap for half an hour
    assert changed(harness) == [target]  # told once


async def test_a_silent_change_is_found_by_the_safety_net(harness: Harness) -> None:
    harness.control.configure(daily_quota=2000, supports_multi=False)
    tasks = _tasks(harness)
    service = await harness.service(tasks, daily_quota=2000)
    await harness.settle(service, 600)
    harness.control.change_task(tasks[5], silent=True, status=2)  # no feed can see it
    await harness.settle(service, 24 * 3600)
    assert changed(harness) == [tasks[5]]
    assert harness.control.state()["quota"]["used"] <= 2000


async def test_the_action_log_serves_where_task_list_cannot(harness: Harness) -> None:
    harness.control.configure(feed_methods=["action.getListByPeriod"])
    tasks = _tasks(harness, 20)
    service = await harness.service(tasks)
    await harness.settle(service, 600)
    harness.control.change_task(tasks[3], status=2)
    await harness.settle(service, 90)
    assert service.feed.mode is FeedMode.ACTIONS
    assert changed(harness) == [tasks[3]]


async def test_without_feeds_every_task_is_planned_and_it_is_said_once(harness: Harness) -> None:
    harness.control.configure(feed_methods=[])
    tasks = _tasks(harness, 5)
    with structlog.testing.capture_logs() as logs:
        service = await harness.service(tasks)
        await harness.settle(service, 3600)
    assert service.feed.mode is FeedMode.NONE
    assert await service.store.get_meta("feed.mode") == "none"
    said = [line for line in logs if "no change feed" in line["event"]]
    assert len(said) == 1 and said[0]["log_level"] == "warning"
    harness.control.change_task(tasks[2], status=2)
    await harness.settle(service, 3600)
    assert changed(harness) == [tasks[2]]  # the per-task plan, as before


async def test_a_deadline_moved_in_silence_is_caught_by_the_overdue_sweep(
    harness: Harness,
) -> None:
    """The feed shows no flip and no silent change, and the planner polls at
    the deadline it knows: a deadline moved near in silent mode went unseen
    for hours. The hourly sweep of overdue tasks finds it."""
    harness.control.configure(daily_quota=2000, supports_multi=False)
    tasks = _tasks(harness)
    service = await harness.service(tasks, daily_quota=2000)
    await harness.settle(service, 900)
    soon = datetime.fromtimestamp(harness.clock.now + 600, MSK).strftime("%d-%m-%Y %H:%M")
    records = service.poller.records.values()
    target = max(records, key=lambda r: r.last_poll_at or 0).task_id  # its turn is hours away
    harness.control.change_task(target, silent=True, endTime=soon)
    await harness.settle(service, 600 + 3700)
    overdue = [e.task_id for e in harness.events if e.kind is EventKind.BECAME_OVERDUE]
    assert overdue == [target]


async def test_a_look_over_many_pages_goes_on_over_several_rounds(harness: Harness) -> None:
    """A look after the baselines of 2,500 new tasks spans 25 pages: it is
    read 20 pages a round, so a round (and the planner's deadline polls)
    never waits behind a long look, and it is committed once it is whole."""
    account = harness.emulator.account
    with account.lock:
        tasks = [account.add_task({"title": f"Много {i}", "status": 1})["id"] for i in range(2500)]
    service = await harness.service(tasks)
    await service.poller.tick(max_requests=1)
    assert harness.control.state()["requests"]["task.getList"] == PAGES_PER_ROUND
    assert service.feed.cursor is None  # not whole yet
    await service.poller.tick(max_requests=1)
    assert harness.control.state()["requests"]["task.getList"] == 25 + 1  # and the sweep
    assert service.feed.cursor is not None
    assert all(service.poller.records[t].card is not None for t in tasks)


async def test_a_card_older_than_the_one_known_never_overwrites_it(harness: Harness) -> None:
    """A list page read before the bot's /watch stored a newer card must not
    put the older status back (and alert it twice over)."""
    task = harness.control.create_task(title="Порядок", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 120)
    old = await service.client.get_task(task["id"])  # read at `started`…
    started = harness.clock.now
    harness.advance(5)
    harness.control.change_task(task["id"], status=2)
    await service.poller.ingest(await service.client.get_task(task["id"]))  # …then a newer one
    await service.poller._take_cards([old], started)
    snapshot = await service.store.load_card(task["id"])
    assert snapshot is not None and snapshot.status == 2
    assert [e.kind for e in harness.events] == [EventKind.STATUS_CHANGED]
