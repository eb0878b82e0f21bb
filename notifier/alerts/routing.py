"""Which channels and recipients get each event.

Every matching ``[[routes]]`` entry delivers; a filter left out matches
anything. With no task routes, every task event goes to every channel. The
operator's events go through ``operator = true`` routes, or to every channel
when there is none — except that a channel's own failure is never sent
through that same channel.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence

from ..channels.base import Channel
from ..config import RouteSection
from ..store import Subscription
from .events import Event, EventKind

Delivery = tuple[str, str]  # (channel name, recipient)
# An account's chats subscribed to a task (or a project): (account name, id)
Subscribers = Callable[[str, int], Awaitable[Sequence[Subscription]]]


def route_matches(route: RouteSection, event: Event) -> bool:
    task = event.task
    # (the service's own alerts, a channel failing, are of no account: every route's)
    if route.accounts is not None and event.account and event.account not in route.accounts:
        return False
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
    def __init__(
        self,
        routes: Sequence[RouteSection],
        channels: Mapping[str, Channel],
        *,
        default_events: Collection[str] | None = None,
        subscribers: Subscribers | None = None,
        project_subscribers: Subscribers | None = None,
        bot_channel: str | None = None,
        account_events: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        """``default_events``: what a subscription without its own list gets
        (``account_events``: per account, where they differ)."""
        self.channels = channels
        self.task_routes = [r for r in routes if not r.operator]
        self.operator_routes = [r for r in routes if r.operator]
        self.default_events = None if default_events is None else frozenset(default_events)
        self.subscribers = subscribers
        self.project_subscribers = project_subscribers
        self.bot_channel = bot_channel
        self.account_events = {k: frozenset(v) for k, v in (account_events or {}).items()}

    def wanted(self, account: str = "") -> frozenset[str] | None:
        """Event kinds anything may want of an account's (None: all), for its
        poller to keep: its own ``watch.events``, and what its routes list."""
        if self.default_events is None or self.bot_channel is not None:
            return None
        own = self.account_events.get(account, self.default_events)
        listed = {
            e
            for r in self.task_routes
            if r.accounts is None or account in r.accounts
            for e in (r.events or ())
        }
        return own | listed

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

    async def deliveries(self, event: Event) -> list[Delivery]:
        found = [
            (name, recipient)
            for name in self.channel_names(event)
            if name in self.channels
            for recipient in self.channels[name].recipients()
        ]
        return found + [d for d in await self._subscribed(event) if d not in found]

    async def _subscribed(self, event: Event) -> list[Delivery]:
        """Chats that subscribed to this task, or to its project, through the
        bot, unless muted."""
        if self.subscribers is None or self.bot_channel is None or event.task_id is None:
            return []
        at = event.at.timestamp()
        subscriptions = list(await self.subscribers(event.account, event.task_id))
        project = event.task.project_id if event.task is not None else None
        if project is not None and self.project_subscribers is not None:
            chats = {sub.chat_id for sub in subscriptions}
            subscriptions += [
                s
                for s in await self.project_subscribers(event.account, project)
                if s.chat_id not in chats
            ]
        found = []
        for sub in subscriptions:
            kinds = sub.events or self.account_events.get(event.account, self.default_events)
            if kinds is not None and event.kind.value not in kinds:
                continue
            if sub.muted_until is not None and sub.muted_until > at:
                continue
            found.append((self.bot_channel, str(sub.chat_id)))
        return found
