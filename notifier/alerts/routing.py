"""Which channels and recipients get each event.

Every matching ``[[routes]]`` entry delivers; a filter left out matches
anything. With no task routes, every task event goes to every channel. The
operator's events go through ``operator = true`` routes, or to every channel
when there is none — except that a channel's own failure is never sent
through that same channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..channels.base import Channel
from ..config import RouteSection
from .events import Event, EventKind

Delivery = tuple[str, str]  # (channel name, recipient)


def route_matches(route: RouteSection, event: Event) -> bool:
    task = event.task
    if route.events is not None and event.kind.value not in route.events:
        return False
    if route.tasks is not None and event.task_id not in route.tasks:
        return False
    if route.projects is not None and (task is None or task.project_id not in route.projects):
        return False
    if route.importance is not None and (task is None or task.importance not in route.importance):
        return False
    return not (
        route.workers is not None
        and (task is None or not set(task.worker_ids) & set(route.workers))
    )


class Router:
    def __init__(self, routes: Sequence[RouteSection], channels: Mapping[str, Channel]) -> None:
        self.channels = channels
        self.task_routes = [r for r in routes if not r.operator]
        self.operator_routes = [r for r in routes if r.operator]

    def channel_names(self, event: Event) -> list[str]:
        routes = self.operator_routes if event.kind.operator else self.task_routes
        if not routes:
            names = list(self.channels)
        else:
            names = []
            for route in routes:
                if route_matches(route, event):
                    names.extend(n for n in route.channels if n not in names)
        if event.kind in (EventKind.CHANNEL_FAILING, EventKind.CHANNEL_RECOVERED):
            names = [n for n in names if n != event.details.get("channel")]
        return names

    def deliveries(self, event: Event) -> list[Delivery]:
        return [
            (name, recipient)
            for name in self.channel_names(event)
            if name in self.channels
            for recipient in self.channels[name].recipients()
        ]
