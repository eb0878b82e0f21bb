"""A channel for tests: records what it is given, answers from a script."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from notifier.channels.base import Channel, ChannelOptions, Delivered, Message, SendResult
from tests.alerts.samples import renderer


class Recording(Channel):
    """A channel that records what it is given and answers from a script."""

    def __init__(self, name: str, recipients: Sequence[str] = ("r1",), **options: Any) -> None:
        super().__init__(name, ChannelOptions(type="recording", **options), renderer())
        self._recipients = list(recipients)
        self.sent: list[Message] = []
        self.delivered = asyncio.Event()
        self.script: list[SendResult] = []
        self.delay_s = 0.0

    def recipients(self) -> list[str]:
        return self._recipients

    async def send(self, message: Message) -> SendResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        result = self.script.pop(0) if self.script else Delivered()
        if isinstance(result, Delivered):
            self.sent.append(message)
            self.delivered.set()
        return result

    def titles(self) -> list[list[str]]:
        return [[e.task.title if e.task else "" for e in m.events] for m in self.sent]


def channels(*names: str) -> dict[str, Channel]:
    return {name: Recording(name, recipients=(f"{name}-1",)) for name in names}
