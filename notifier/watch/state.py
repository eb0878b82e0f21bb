"""What the service remembers of each watched task between polls."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..planfix.model import Task
from ..store import codec

# Every card's JSON has the same keys in the same order: with them as a
# preset dictionary a card packs to ~300 bytes instead of ~540 (under 512,
# where Python's small-object allocator reuses memory well).
_SHAPE = codec.dumps(Task(id=0)).encode()


@dataclass(frozen=True, slots=True)
class Card:
    """The last good card of a task, packed (its stored JSON, compressed),
    with the few facts the planner asks for on every decision kept as they
    are. 50,000 cards as Task objects took ~80 MB; packed, about 17 MB.
    A card is unpacked only to be diffed against a different one."""

    packed: bytes
    deadline: float | None  # when isOverdued flips, epoch seconds
    overdued: bool
    close_to_deadline: bool
    status: int | None
    status_set: int | None
    general: int | None  # the task number people see

    @classmethod
    def of(cls, task: Task, text: str | None = None) -> Card:
        """``text``: the card's JSON where already at hand (read from the store)."""
        deadline = task.deadline
        packer = zlib.compressobj(6, zdict=_SHAPE)
        return cls(
            packed=packer.compress((text or codec.dumps(task)).encode()) + packer.flush(),
            deadline=deadline.timestamp() if deadline else None,
            overdued=task.is_overdued,
            close_to_deadline=task.is_close_to_deadline,
            status=task.status,
            status_set=task.status_set,
            general=task.general,
        )

    @classmethod
    def load(cls, text: str) -> Card:
        return cls.of(codec.load_task(text), text)

    def json(self) -> str:
        unpacker = zlib.decompressobj(zdict=_SHAPE)
        return (unpacker.decompress(self.packed) + unpacker.flush()).decode()

    def task(self) -> Task:
        return codec.load_task(self.json())


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

    @property
    def snapshot(self) -> Task | None:
        """The last good card, unpacked (each time: keep what you need)."""
        return self.card.task() if self.card is not None else None
