"""Routes: which channels get which events."""

from __future__ import annotations

from typing import Any

from notifier.alerts.events import EventKind
from notifier.alerts.routing import Router
from notifier.config import RouteSection
from tests.alerts.recording import channels
from tests.alerts.samples import event, summary


def router(*routes: dict[str, Any]) -> Router:
    return Router([RouteSection(**r) for r in routes], channels("team", "mail", "ops"))


async def test_no_routes_everything_everywhere() -> None:
    assert router().channel_names(event()) == ["team", "mail", "ops"]
    assert await router().deliveries(event()) == [
        ("team", "team-1"),
        ("mail", "mail-1"),
        ("ops", "ops-1"),
    ]


def test_filters() -> None:
    routes = router(
        {"events": ["became_overdue"], "projects": [12], "channels": ["mail"]},
        {"importance": ["HIGH"], "channels": ["team"]},
        {"workers": [7], "tasks": [1001], "channels": ["ops"]},
    )
    overdue = event(EventKind.BECAME_OVERDUE)
    assert routes.channel_names(overdue) == ["mail"]
    assert routes.channel_names(event(EventKind.BECAME_OVERDUE, task=summary(project_id=99))) == []
    assert routes.channel_names(event(task=summary(importance="HIGH"))) == ["team"]
    assert routes.channel_names(event(task=summary(worker_ids=(3, 7)))) == ["ops"]
    assert routes.channel_names(event(task_id=1002, task=summary(1002, worker_ids=(7,)))) == []


def test_operator_events() -> None:
    quota = event(EventKind.QUOTA_EXHAUSTED, task_id=None)
    assert router({"channels": ["team"]}).channel_names(quota) == ["team", "mail", "ops"]
    with_ops = router({"channels": ["team"]}, {"operator": True, "channels": ["ops"]})
    assert with_ops.channel_names(quota) == ["ops"]
    assert with_ops.channel_names(event()) == ["team"]  # task events never take the operator route


def test_a_failing_channel_is_not_told_through_itself() -> None:
    failing = event(EventKind.CHANNEL_FAILING, task_id=None, details={"channel": "team"})
    assert router().channel_names(failing) == ["mail", "ops"]
