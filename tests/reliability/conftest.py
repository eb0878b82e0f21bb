"""The watch engine's harness (emulator + injected clock), shared with tests/watch."""

from tests.watch.test_poller import harness

__all__ = ["harness"]
