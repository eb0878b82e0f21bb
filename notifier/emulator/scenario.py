"""The demo's scripted account: tasks that change while the service watches."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from typing import Any

from .fixtures import PEOPLE
from .state import DATETIME_FMT, Account

DEMO_TASKS: list[dict[str, Any]] = [
    {"title": "Подготовить отчёт по продажам за ноябрь", "status": 1},
    {"title": "Согласовать договор поставки с ООО «Ромашка»", "status": 2},
    {"title": "Обновить прайс-лист на сайте", "status": 2},
    {"title": "Провести ревизию склада", "status": 2, "importance": "HIGH"},
    {"title": "Проверить акт сверки с АО «Вектор»", "status": 2},
    {"title": "Отправить клиенту счёт-фактуру № 418", "status": 2},
    {"title": "Собрать данные для презентации совету директоров", "status": 2},
    {"title": "Исправить макет главной страницы", "status": 4, "statusSet": 1},
]


def next_minute(now: datetime, at_least_s: float) -> datetime:
    """PlanFix deadlines have minute precision: the first whole minute far enough ahead."""
    target = now + timedelta(seconds=at_least_s)
    return target.replace(second=0, microsecond=0) + timedelta(minutes=1)


def build(account: Account) -> list[int]:
    """Create the demo tasks; two deadlines are set so they pass during the demo."""
    now = account.now()
    rng = random.Random(3)
    ids = []
    with account.lock:
        for spec in DEMO_TASKS:
            task = account.add_task(
                {
                    "owner": PEOPLE[0],
                    "project": {"id": 11, "name": "Внедрение CRM"},
                    "workers": {"users": [rng.choice(PEOPLE[1:])]},
                    "endTime": (now + timedelta(days=rng.randint(2, 5))).strftime(DATETIME_FMT),
                    **spec,
                }
            )
            ids.append(int(task["id"]))
        # Overdue within about a minute, and entering the 24 h window soon after start.
        account.change_task(ids[5], {"endTime": next_minute(now, 20).strftime(DATETIME_FMT)})
        soon = next_minute(now + timedelta(seconds=account.settings.close_to_deadline_s), 25)
        account.change_task(ids[6], {"endTime": soon.strftime(DATETIME_FMT)})
    return ids


Step = tuple[float, int, dict[str, Any] | None]  # (seconds after start, task, changes)


def script(ids: list[int]) -> list[Step]:
    """The opening moves; ``None`` changes delete the task."""
    return [
        (4, ids[0], {"status": 2}),  # taken into work
        (8, ids[1], {"workers": {"users": [PEOPLE[4], PEOPLE[5]]}}),  # reassigned
        (12, ids[2], None),  # deleted
        (16, ids[3], {"status": 3}),  # completed
        (20, ids[4], {"title": "Проверить и подписать акт сверки", "importance": "HIGH"}),
        (26, ids[0], {"status": 4}),  # put off
    ]


class Scenario:
    """Plays the script, then changes a random task's status every ``every_s``
    until stopped. ``pace`` scales every wait (0.1 = ten times faster)."""

    def __init__(
        self, account: Account, ids: list[int], *, pace: float = 1.0, every_s: float = 15
    ) -> None:
        self.account = account
        self.ids = ids
        self.pace = pace
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="demo-scenario", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _apply(self, task_id: int, changes: dict[str, Any] | None) -> None:
        with self.account.lock:
            if task_id not in self.account.tasks:
                return
            if changes is None:
                del self.account.tasks[task_id]
            else:
                self.account.change_task(task_id, changes)

    def _play(self) -> None:
        elapsed = 0.0
        for at, task_id, changes in script(self.ids):
            if self._stop.wait((at - elapsed) * self.pace):
                return
            elapsed = at
            self._apply(task_id, changes)
        rng = random.Random(11)
        while not self._stop.wait(self.every_s * self.pace):
            with self.account.lock:
                alive = [i for i in self.ids if i in self.account.tasks]
                if not alive:
                    return
                task_id = rng.choice(alive)
                current = self.account.tasks[task_id].get("status")
            choices = [s for s in (1, 2, 3, 4) if s != current]
            self._apply(task_id, {"status": rng.choice(choices), "statusSet": 1})
