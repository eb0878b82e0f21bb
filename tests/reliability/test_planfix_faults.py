"""Every PlanFix fault, during the baseline and during a real change: no false
alert, no crash, and the real change alerted once the fault is over.

Runs the service's poller against the emulator with one injected clock (fast:
it is part of `make test`)."""

from __future__ import annotations

from typing import Any

import pytest

from notifier.alerts.events import EventKind
from tests.watch.test_poller import Harness

# (fault kind, options): each hits a few requests in a row, then PlanFix is fine.
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("http_error", {"status": 500}),
    ("http_error", {"status": 502}),
    ("http_error", {"status": 503}),
    ("slow", {"delay_s": 1.0}),  # longer than the client's timeout below
    ("reset", {}),
    ("malformed", {}),
    ("html", {}),
    ("wrong_root", {}),
    ("xml_bomb", {}),
    ("xxe", {}),
    ("huge", {}),
    ("non_utf8", {}),
    ("error", {"code": "0005"}),
    ("error", {"code": "0007", "times": 1}),  # the day's quota is gone: until the reset
    ("error", {"code": "0011"}),
    ("error", {"code": "3014"}),
    ("error", {"code": "0024"}),
    ("error", {"code": "0000"}),
    ("error", {"code": "3001", "per_task": True, "times": 1}),  # one glitch: not "deleted"
    ("error", {"code": "3008", "per_task": True, "times": 1}),
]
IDS = [
    f"{kind}-{opts.get('status') or opts.get('code') or ''}".rstrip("-") for kind, opts in FAULTS
]
TASK_KINDS = {k for k in EventKind if not k.operator}


def inject(harness: Harness, task_id: int, kind: str, options: dict[str, Any]) -> None:
    options = dict(options)
    if options.pop("per_task", False):
        options["task_id"] = task_id
    options.setdefault("times", 3)
    harness.control.inject(kind, **options)


def served_in_full(harness: Harness) -> bool:
    """Every request the fault was to hit did meet it (the test tried what it says)."""
    left: list[dict[str, Any]] = harness.control.state()["faults"]
    return not left


def task_events(harness: Harness) -> list[EventKind]:
    return [e.kind for e in harness.events if e.kind in TASK_KINDS]


@pytest.mark.parametrize(("kind", "options"), FAULTS, ids=IDS)
async def test_fault_during_the_baseline(
    harness: Harness, kind: str, options: dict[str, Any]
) -> None:
    task = harness.control.create_task(title="Под сбоем", status=1)
    other = harness.control.create_task(title="Соседняя", status=1)
    inject(harness, task["id"], kind, options)
    service = await harness.service([task["id"], other["id"]], timeout_s=0.3)
    await harness.settle(service, 3 * 3600)
    assert served_in_full(harness)
    assert task_events(harness) == []  # no false alert
    harness.control.clear_faults()
    harness.advance(24 * 3600)  # past any quota pause
    await harness.settle(service, 600)
    harness.control.change_task(task["id"], status=2)
    await harness.settle(service, 3600)
    assert task_events(harness) == [EventKind.STATUS_CHANGED]


@pytest.mark.parametrize(("kind", "options"), FAULTS, ids=IDS)
async def test_fault_during_a_real_change(
    harness: Harness, kind: str, options: dict[str, Any]
) -> None:
    task = harness.control.create_task(title="Меняется под сбоем", status=1)
    service = await harness.service([task["id"]], timeout_s=0.3)
    await harness.settle(service, 600)
    harness.control.change_task(task["id"], status=2)
    inject(harness, task["id"], kind, options)
    await harness.settle(service, 3 * 3600)
    assert served_in_full(harness)
    harness.advance(24 * 3600)  # past any quota pause
    await harness.settle(service, 3600)
    assert task_events(harness) == [EventKind.STATUS_CHANGED]  # once, and nothing false
    assert (
        harness.events[[e.kind for e in harness.events].index(EventKind.STATUS_CHANGED)].new
        == "В работе"
    )


async def test_a_task_really_deleted_is_told_once(harness: Harness) -> None:
    task = harness.control.create_task(title="Удалят", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 600)
    harness.control.delete_task(task["id"])
    await harness.settle(service, 600)
    assert task_events(harness) == [EventKind.TASK_UNAVAILABLE]
