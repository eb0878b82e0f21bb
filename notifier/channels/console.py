"""Alerts on standard output: for the demo and for debugging."""

from __future__ import annotations

import sys
import time
from typing import Literal

from .base import Channel, ChannelOptions, Delivered, Message, SendResult


class ConsoleOptions(ChannelOptions):
    type: Literal["console"] = "console"


class ConsoleChannel(Channel):
    Options = ConsoleOptions
    max_length = 1_000_000

    def recipients(self) -> list[str]:
        return ["stdout"]

    async def send(self, message: Message) -> SendResult:
        stamp = time.strftime("%H:%M:%S")
        for line in self.renderer.text(message.events).splitlines():
            print(f"{stamp} {line}", file=sys.stdout, flush=True)
        return Delivered()
