"""What the service remembers of each watched task between polls."""

from __future__ import annotations

from dataclasses import dataclass

from ..planfix.model import Task


@dataclass
class TaskRecord:
    task_id: int
    snapshot: Task | None = None  # the last good card; None before the baseline
    last_poll_at: float | None = None  # the last attempt, whatever its result
    last_ok_at: float | None = None
    last_result: str | None = None  # ok | error | gone? (one 3001/3008 seen) | unavailable
    last_error: str | None = None
    failures: int = 0  # consecutive failed polls
    unavailable: bool = False  # 3001/3008 seen; re-checked rarely
    changes: float = 0.0  # decayed count of changes found (to learn the change rate)
    observed_s: float = 0.0  # decayed time watched
    polls: int = 0
    reminded_at: float | None = None  # the last overdue alert or reminder
