"""What people type for a task: ``418``, ``#418``, a PlanFix link, or ``id:1001``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Account

_URL = re.compile(r"^https?://([\w-]+)[\w.-]*/task/(\d+)/?(?:[?#].*)?$", re.IGNORECASE)
_NUMBER = re.compile(r"^#?(\d+)$")
_ID = re.compile(r"^id:(\d+)$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+)\s*(m|min|мин|h|ч|d|д)?$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A task as typed: by its number (what people see) or by its API id."""

    value: int
    is_id: bool = False


def parse_task(text: str) -> TaskRef | None:
    text = text.strip()
    if match := _ID.match(text):
        return TaskRef(int(match.group(1)), is_id=True)
    if match := _URL.match(text):
        return TaskRef(int(match.group(2)))  # links carry the task number
    if match := _NUMBER.match(text):
        return TaskRef(int(match.group(1)))
    return None


def link_account(text: str) -> str | None:
    """The PlanFix account a task's link names: ACC of https://ACC.planfix.ru/task/418."""
    match = _URL.match(text.strip())
    return match.group(1).lower() if match else None


def linked_account(texts: Iterable[str], accounts: Iterable[Account]) -> Account | None:
    """The account whose PlanFix account the first task link among ``texts`` names."""
    named = next((acc for acc in map(link_account, texts) if acc is not None), None)
    return next((a for a in accounts if a.planfix.account.lower() == named), None)


def parse_duration(text: str) -> float | None:
    """``30m``, ``2h``, ``1d``, ``90`` (minutes) → seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        return None
    amount, unit = int(match.group(1)), (match.group(2) or "m").lower()
    scale = {"m": 60, "min": 60, "мин": 60, "h": 3600, "ч": 3600, "d": 86400, "д": 86400}[unit]
    return float(amount * scale)
