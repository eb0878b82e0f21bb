"""What the service remembers of each watched task between polls."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from ..planfix.model import Task
from ..store import codec


@dataclass(frozen=True, slots=True)
class Card:
    """What the service keeps in memory of a task's last good card: the few
    facts the planner asks for on every decision, and a digest of the whole
    card, to tell at once that a new one is the same (most polls find it so).
    The card itself lives in the store, which is read only to diff a card
    that did change. (50,000 cards as Task objects took ~80 MB; packed with
    zlib, ~17 MB; as digests, ~2 MB.)"""

    digest: int
    deadline: float | None  # when isOverdued flips, epoch seconds
    overdued: bool
    close_to_deadline: bool
    status: int | None
    status_set: int | None
    general: int | None  # the task number people see
    text: str | None = None  # the card's JSON, until the store has it

    @classmethod
    def of(cls, task: Task, text: str | None = None) -> Card:
        """A card read from PlanFix, to be stored (``text``: its JSON, where at hand)."""
        text = text or codec.dumps(task)
        deadline = task.deadline
        return cls(
            digest=digest(text),
            deadline=deadline.timestamp() if deadline else None,
            overdued=task.is_overdued,
            close_to_deadline=task.is_close_to_deadline,
            status=task.status,
            status_set=task.status_set,
            general=task.general,
            text=text,
        )

    @classmethod
    def load(cls, text: str) -> Card:
        """A card the store holds."""
        return cls.of(codec.load_task(text), text).stored()

    def stored(self) -> Card:
        """The same, once the store has it: its text is not kept."""
        return self if self.text is None else replace(self, text=None)


def digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class TaskRecord:
    task_id: int
    card: Card | None = None  # the last good card; None before the baseline
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
