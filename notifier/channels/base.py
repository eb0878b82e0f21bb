"""The one interface every channel implements, and how channels are found.

A channel is a small class: it is built from its ``[channels.NAME]`` options
(a pydantic model it declares), sends one :class:`Message` — one event or a
digest of several for one recipient — and says what happened: delivered,
retry later (perhaps at a time the service gave), failed for good (with
the reason), or misconfigured (the operator must fix its options).
Everything around that — the outbox, retries, grouping, quiet hours — is
the dispatcher's, not the channel's.

Third-party channels register under the entry-point group
``planfix_notifier.channels``::

    [project.entry-points."planfix_notifier.channels"]
    matrix = "my_package.matrix:MatrixChannel"
"""

from __future__ import annotations

import abc
import importlib
import re
from dataclasses import dataclass
from datetime import time
from importlib.metadata import entry_points
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..alerts.events import Event
from ..alerts.render import Renderer

ENTRY_POINT_GROUP = "planfix_notifier.channels"


@dataclass(frozen=True, slots=True)
class Message:
    channel: str
    recipient: str
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Delivered:
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RetryLater:
    reason: str
    after_s: float | None = None  # the service said when; None = our back-off
    sent_events: int = 0  # a message sent in parts: its first N events went out


@dataclass(frozen=True, slots=True)
class FailedForGood:
    reason: str
    sent_events: int = 0  # as for RetryLater


@dataclass(frozen=True, slots=True)
class Misconfigured:
    """The channel cannot work until the operator fixes its options (a bot
    token Telegram refuses, a login the mail server does not offer or
    refuses). Its deliveries wait (up to ``max_age_s``, as any); the channel
    is tried again rarely, and at once after a reload. ``reason`` names the key."""

    reason: str
    sent_events: int = 0  # as for RetryLater


SendResult = Delivered | RetryLater | FailedForGood | Misconfigured


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


class ChannelOptions(BaseModel):
    """Keys every channel has; a channel's own options extend these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    quiet_hours: str | None = None  # "22:00-08:00": deliveries wait, then go as one digest
    quiet_timezone: str | None = None  # default: planfix.timezone
    urgent_passes_quiet: bool = True  # urgent events go out even in quiet hours
    group: bool = True  # bursts to one recipient become one message
    # What keeps its order: all of a recipient's alerts (one send at a time to
    # each), or, with group = false, each task's (a recipient's tasks in parallel).
    order: Literal["recipient", "task"] = "recipient"
    parallel: int = Field(64, ge=1, le=256)  # sends under way at once, per instance
    max_age_s: float = Field(2 * 86400.0, gt=0)  # then a delivery becomes a dead letter

    @model_validator(mode="after")
    def _order(self) -> ChannelOptions:
        if self.order == "task" and self.group:
            raise ValueError('order = "task" needs group = false (a digest is per recipient)')
        return self

    @field_validator("quiet_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            quiet_window(value)
        return value


def quiet_window(value: str) -> tuple[time, time]:
    match = _WINDOW.match(value)
    if not match:
        raise ValueError(f'quiet_hours is "HH:MM-HH:MM", got {value!r}')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        return time(h1, m1), time(h2, m2)
    except ValueError:
        raise ValueError(f"quiet_hours {value!r}: not a time of day") from None


class Channel(abc.ABC):
    Options: ClassVar[type[ChannelOptions]] = ChannelOptions
    max_length: ClassVar[int] = 4096  # of one message, in the channel's own measure

    def __init__(self, name: str, options: ChannelOptions, renderer: Renderer) -> None:
        self.name = name
        self.options = options
        self.renderer = renderer

    @abc.abstractmethod
    def recipients(self) -> list[str]:
        """Who this channel delivers to (chat ids, addresses, a URL…), as text."""

    @abc.abstractmethod
    async def send(self, message: Message) -> SendResult:
        """Deliver one message; never raise for a delivery problem — say it."""

    async def check(self) -> CheckResult:
        """Reach the service without sending anything."""
        return CheckResult(True, "nothing to check")

    def carry_over(self, previous: Channel) -> None:
        """On a reload, keep what the channel of the same name had learned that
        still holds (a rate limit's recent sends, a migrated chat id)."""
        return None

    async def aclose(self) -> None:
        return None


# The built-in channels, imported only when configured: python-telegram-bot
# alone is 17 MB of the process, wasted where no Telegram channel is set.
BUILTIN = {
    "console": "notifier.channels.console:ConsoleChannel",
    "email": "notifier.channels.email:EmailChannel",
    "telegram": "notifier.channels.telegram:TelegramChannel",
    "webhook": "notifier.channels.webhook:WebhookChannel",
}


def channel_kinds() -> list[str]:
    """The name of every channel type, built in or installed, none imported."""
    names = set(BUILTIN) | {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def channel_type(kind: str) -> type[Channel] | None:
    """The channel type called ``kind``, imported now; None if there is none."""
    if kind in BUILTIN:
        module, _, name = BUILTIN[kind].partition(":")
        found: object = getattr(importlib.import_module(module), name)
    else:
        entries = entry_points(group=ENTRY_POINT_GROUP, name=kind)
        if not entries:
            return None
        found = next(iter(entries)).load()
    return found if isinstance(found, type) and issubclass(found, Channel) else None


def channel_types() -> dict[str, type[Channel]]:
    """Every channel type: the built-in ones and those installed by packages."""
    found = {kind: channel_type(kind) for kind in channel_kinds()}
    return {kind: loaded for kind, loaded in found.items() if loaded is not None}
