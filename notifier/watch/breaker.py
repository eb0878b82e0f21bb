"""PlanFix failing as a whole — an outage, not one task's problem.

Faults of the server (no answer, an HTTP error, HTML, garbled XML, a
transient error code) are the server's: they do not count against the tasks
that happened to be in the request, so per-task back-off never holds a task
after PlanFix is back. Instead this breaker opens: while PlanFix fails, one
request at a time probes it, 10, 20, 40 s … and then at most ``max_wait_s``
apart; the first good answer closes it and every task is on its own schedule
again. A fatal error (a wrong account, a revoked token) is probed more slowly:
only the operator can fix it, and a reload closes the breaker.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..planfix.errors import (
    BadCardError,
    BadResponseError,
    ErrorClass,
    PlanfixApiError,
    PlanfixError,
    TransportError,
)

TASK_TRANSIENT_CODES = frozenset({"3014"})  # this task is being modified: its own retry


def is_server_fault(error: PlanfixError) -> bool:
    """A fault of PlanFix itself rather than of the task asked about."""
    if isinstance(error, BadCardError):
        return False
    if isinstance(error, TransportError | BadResponseError):
        return True
    if isinstance(error, PlanfixApiError):
        if error.code in TASK_TRANSIENT_CODES:
            return False
        return error.error_class in (ErrorClass.TRANSIENT, ErrorClass.FATAL_CONFIG)
    return False


@dataclass
class Breaker:
    first_wait_s: float = 10.0
    max_wait_s: float = 60.0
    fatal_wait_s: float = 600.0
    failures: int = 0
    probe_at: float = 0.0

    @property
    def open(self) -> bool:
        return self.failures > 0

    def failed(self, now: float, error: PlanfixError) -> None:
        self.failures += 1
        if error.error_class is ErrorClass.FATAL_CONFIG:
            wait = self.fatal_wait_s  # only the operator can fix it; a reload tries at once
        else:
            wait = min(self.first_wait_s * 2 ** min(self.failures - 1, 20), self.max_wait_s)
        self.probe_at = now + wait

    def closed(self) -> None:
        self.failures = 0
        self.probe_at = 0.0

    def shift(self, step: float) -> None:
        """The wall clock stepped: the next probe stays as far ahead as it was."""
        if self.open:
            self.probe_at += step

    def waiting_until(self, now: float) -> float | None:
        """When the next probe may go, while that is still ahead; else None."""
        return self.probe_at if self.open and now < self.probe_at else None
