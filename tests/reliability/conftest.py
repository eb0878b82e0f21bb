"""Harnesses shared with the rest of the suite: the watch engine's (emulator +
injected clock) and the running service's (emulator + fake Telegram)."""

from tests.test_delivery import running
from tests.watch.test_poller import harness

__all__ = ["harness", "running"]
