"""Watch sets beyond plain ids: task numbers, as people see them in links;
every task of a project or of a saved filter."""

from __future__ import annotations

import structlog

from notifier.alerts.events import EventKind
from tests.watch.test_poller import Harness, harness

__all__ = ["harness"]  # the fixture


async def test_numbers_are_resolved_to_ids_once_and_watched(harness: Harness) -> None:
    task = harness.control.create_task(title="По номеру", status=1)
    assert task["id"] != task["general"]
    service = await harness.service([], watch={"numbers": [task["general"]]})
    await harness.settle(service, 600)
    assert list(service.poller.records) == [task["id"]]
    harness.control.change_task(task["id"], status=2)
    await harness.settle(service, 600)
    assert [e.kind for e in harness.events] == [EventKind.STATUS_CHANGED]
    again = await harness.service([], watch={"numbers": [task["general"]]})  # a restart
    asked = sum(harness.control.state()["requests"].values())
    await again.sets.resolve()
    assert sum(harness.control.state()["requests"].values()) == asked  # remembered, not asked
    assert await again.store.watched_ids() == [task["id"]]


async def test_an_id_that_is_not_in_the_account_is_named_once(harness: Harness) -> None:
    """Tried as a new user: the numbers from task links went into
    ``tasks = [1, 2]``, and nothing said that such ids do not exist."""
    task = harness.control.create_task(title="Настоящая", status=1)
    with structlog.testing.capture_logs() as logs:
        service = await harness.service([task["id"], task["general"]])
        await harness.settle(service, 6 * 3600)
    said = [line for line in logs if "watch.numbers" in line["event"]]
    assert len(said) == 1 and said[0]["log_level"] == "warning", said
    assert str(task["general"]) in str(said[0])


def kinds(harness: Harness) -> list[tuple[EventKind, int]]:
    return [(e.kind, e.task_id or 0) for e in harness.events]


async def test_a_project_is_watched_as_its_tasks_come_and_go(harness: Harness) -> None:
    """Tasks that enter the set get a baseline and no alert; one that leaves
    is no longer polled, with no alert either."""
    control = harness.control
    ours = [control.create_task(title=f"Проект {n}", project={"id": 12})["id"] for n in range(3)]
    control.create_task(title="Чужая", project={"id": 13})
    service = await harness.service([], watch={"projects": [12]})
    await harness.settle(service, 120)
    assert sorted(service.poller.records) == ours
    newcomer = control.create_task(title="Новая в проекте", project={"id": 12})["id"]
    await harness.settle(service, 90)  # the change feed brings it before any discovery
    assert newcomer in service.poller.records and harness.events == []
    control.change_task(newcomer, status=3)
    control.change_task(ours[0], project={"id": 13}, status=3)  # done here, moved on
    await harness.settle(service, 1500)  # two discoveries have run
    assert ours[0] not in service.poller.records
    assert sorted(kinds(harness)) == sorted(
        [(EventKind.STATUS_CHANGED, newcomer), (EventKind.STATUS_CHANGED, ours[0])]
    )
    control.change_task(ours[0], project={"id": 12}, status=1)  # back, changed meanwhile
    await harness.settle(service, 900)
    assert ours[0] in service.poller.records
    assert len(harness.events) == 2  # it comes back to a baseline, not a diff


async def test_a_saved_filter_is_watched(harness: Harness) -> None:
    control = harness.control
    mine = control.create_task(title="Моя", workers={"users": [{"id": 5}]})["id"]
    control.create_task(title="Не моя", workers={"users": [{"id": 6}]})
    control.save_filter(7, worker=5)
    service = await harness.service([], watch={"filters": [7]})
    await harness.settle(service, 120)
    assert list(service.poller.records) == [mine]
    later = control.create_task(title="Тоже моя", workers={"users": [{"id": 5}]})["id"]
    await harness.settle(service, 900)
    assert sorted(service.poller.records) == [mine, later] and harness.events == []


async def test_a_number_that_cannot_be_read_now_holds_up_no_other(harness: Harness) -> None:
    control = harness.control
    bad = control.create_task(title="Кривая", garbled={"endTime": "завтра"})
    good = control.create_task(title="Ровная", status=1)
    service = await harness.service([], watch={"numbers": [bad["general"], good["general"]]})
    await harness.settle(service, 120)
    assert list(service.poller.records) == [good["id"]]
    asked = control.state()["requests"]["task.get"]
    await harness.settle(service, 120)
    assert control.state()["requests"]["task.get"] - asked <= 2  # not every round
    control.change_task(bad["id"], garbled=None)  # PlanFix fixed the card
    await harness.settle(service, 600)
    assert sorted(service.poller.records) == sorted([bad["id"], good["id"]])


async def test_sets_a_server_cannot_list_leave_the_rest_polling(harness: Harness) -> None:
    """Discovery on a server without task.getList (0008) opened the fatal
    breaker: nothing was polled any more."""
    control = harness.control
    control.configure(feed_methods=["action.getListByPeriod"])
    plain = control.create_task(title="Обычная", status=1)["id"]
    with structlog.testing.capture_logs() as logs:
        service = await harness.service([plain], watch={"projects": [12]})
        await harness.settle(service, 600)
        control.change_task(plain, status=2)
        await harness.settle(service, 600)
    assert [e.kind for e in harness.events] == [EventKind.STATUS_CHANGED]
    assert sum("cannot be read" in line["event"] for line in logs) == 1
