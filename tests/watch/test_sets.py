"""Watch sets beyond plain ids: task numbers, as people see them in links."""

from __future__ import annotations

import structlog

from notifier.alerts.events import EventKind
from tests.watch.test_poller import Harness, harness

__all__ = ["harness"]  # the fixture


async def test_numbers_are_resolved_to_ids_once_and_watched(harness: Harness) -> None:
    task = harness.control.create_task(title="По номеру", status=1)
    assert task["id"] != task["general"]
    service = harness.service([], watch={"numbers": [task["general"]]})
    await harness.settle(service, 600)
    assert list(service.poller.records) == [task["id"]]
    harness.control.change_task(task["id"], status=2)
    await harness.settle(service, 600)
    assert [e.kind for e in harness.events] == [EventKind.STATUS_CHANGED]
    again = harness.service([], watch={"numbers": [task["general"]]})  # a restart
    asked = sum(harness.control.state()["requests"].values())
    await again.sets.refresh(again.poller.ingest)
    assert sum(harness.control.state()["requests"].values()) == asked  # remembered, not asked
    assert again.store.watched_ids() == [task["id"]]


async def test_an_id_that_is_not_in_the_account_is_named_once(harness: Harness) -> None:
    """Tried as a new user: the numbers from task links went into
    ``tasks = [1, 2]``, and nothing said that such ids do not exist."""
    task = harness.control.create_task(title="Настоящая", status=1)
    with structlog.testing.capture_logs() as logs:
        service = harness.service([task["id"], task["general"]])
        await harness.settle(service, 6 * 3600)
    said = [line for line in logs if "watch.numbers" in line["event"]]
    assert len(said) == 1 and said[0]["log_level"] == "warning", said
    assert str(task["general"]) in str(said[0])
