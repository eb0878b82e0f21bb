"""Alerts on standard output: for the demo and for debugging."""

from __future__ import annotations

import sys
from datetime import datetime
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
        # In the account's zone, labelled, as every time a person reads here.
        stamp = datetime.now(self.renderer.tz).strftime("%H:%M:%S %Z")
        for line in self.renderer.text(message.events).splitlines():
            print(f"{stamp} {line}", file=sys.stdout, flush=True)
        return Delivered()
