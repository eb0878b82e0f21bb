"""A realistic Russian-speaking account: people, projects, tasks with
deadlines spread around "now"."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from .state import DATE_FMT, DATETIME_FMT, STATUS_SETS, Account

PEOPLE = [
    {"id": 1, "name": "Иван Петров"},
    {"id": 2, "name": "Мария Смирнова"},
    {"id": 3, "name": "Алексей Кузнецов"},
    {"id": 4, "name": "Ольга Соколова"},
    {"id": 5, "name": "Дмитрий Попов"},
    {"id": 6, "name": "Екатерина Лебедева"},
]
GROUPS = [{"id": 20, "name": "Отдел продаж"}, {"id": 21, "name": "Бухгалтерия"}]
PROJECTS = [
    {"id": 11, "name": "Внедрение CRM"},
    {"id": 12, "name": "Сайт компании"},
    {"id": 13, "name": "Закрытие квартала"},
    {"id": 14, "name": "Складская логистика"},
]
CLIENTS = [{"id": 31, "name": "ООО «Ромашка»"}, {"id": 32, "name": "АО «Вектор»"}]
ACTIONS = [
    "Подготовить",
    "Согласовать",
    "Проверить",
    "Отправить клиенту",
    "Обновить",
    "Исправить",
    "Провести ревизию:",
    "Собрать данные для",
]
OBJECTS = [
    "отчёт по продажам за ноябрь",
    "договор поставки",
    "счёт-фактуру № 418",
    "коммерческое предложение",
    "макет главной страницы",
    "акт сверки",
    "план релиза 2.4",
    "остатки на складе",
    "презентацию для совета директоров",
    "инструкцию для операторов",
]


def make_task(rng: random.Random, now: datetime) -> dict[str, Any]:
    """One task record with PlanFix field names; deadlines spread over ±3 days."""
    status_set = rng.choice([1, 1, 1, 2])
    active = [sid for sid, _, is_active in STATUS_SETS[status_set][1] if is_active]
    task: dict[str, Any] = {
        "title": f"{rng.choice(ACTIONS)} {rng.choice(OBJECTS)}",
        "description": rng.choice(["", "Срочно, клиент ждёт.", "См. вложения в карточке."]),
        "importance": rng.choice(["AVERAGE", "AVERAGE", "AVERAGE", "HIGH"]),
        "status": rng.choice([*active, 2, 2]),
        "statusSet": status_set,
        "owner": rng.choice(PEOPLE),
        "project": rng.choice(PROJECTS),
        "beginDateTime": (now - timedelta(days=rng.randint(1, 30))).strftime(DATETIME_FMT),
        "workers": {"users": rng.sample(PEOPLE, rng.randint(1, 2))},
        "auditors": {"users": [rng.choice(PEOPLE)]},
    }
    if rng.random() < 0.15:
        task["workers"]["groups"] = [rng.choice(GROUPS)]
    if rng.random() < 0.3:
        task["client"] = rng.choice(CLIENTS)
    roll = rng.random()
    if roll < 0.8:
        deadline = now + timedelta(minutes=rng.randint(-3 * 24 * 60, 3 * 24 * 60))
        task["endTime"] = deadline.strftime(DATETIME_FMT)
    elif roll < 0.9:
        task["endTime"] = (now + timedelta(days=rng.randint(1, 10))).strftime(DATE_FMT)
    return task


def populate(account: Account, count: int, *, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    now = account.now()
    with account.lock:
        return [account.add_task(make_task(rng, now)) for _ in range(count)]
