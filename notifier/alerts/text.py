"""One line per event, in Russian: the console's words until the templates land."""

from __future__ import annotations

from ..alerts.events import Event, EventKind

_HEADLINES = {
    EventKind.STATUS_CHANGED: "Статус: {old} → {new}",
    EventKind.BECAME_OVERDUE: "Просрочена: срок был {new}",
    EventKind.OVERDUE_RESOLVED: "Больше не просрочена (срок был {old})",
    EventKind.CLOSE_TO_DEADLINE: "Скоро срок: {new}",
    EventKind.NOT_ACCEPTED_IN_TIME: "Не принята вовремя",
    EventKind.DEADLINE_CHANGED: "Срок: {old} → {new}",
    EventKind.WORKERS_CHANGED: "Исполнители: {old} → {new}",
    EventKind.TITLE_CHANGED: "Название: «{old}» → «{new}»",
    EventKind.IMPORTANCE_CHANGED: "Важность: {old} → {new}",
    EventKind.TASK_UNAVAILABLE: "Задача недоступна (удалена или нет доступа, код {code})",
    EventKind.TASK_AVAILABLE_AGAIN: "Задача снова доступна",
    EventKind.QUOTA_EXHAUSTED: "Дневной лимит запросов PlanFix исчерпан; "
    "опрос продолжится в {resets_at}",
    EventKind.PLANFIX_FAILING: "PlanFix не отвечает как следует: {error}",
    EventKind.PLANFIX_RECOVERED: "PlanFix снова отвечает",
}


def one_line(event: Event) -> str:
    values = {"old": event.old or "—", "new": event.new or "—", **event.details}
    headline = _HEADLINES[event.kind].format_map(_Missing(values))
    task = event.task
    if task is None:
        subject = f"задача {event.task_id}" if event.task_id else "сервис"
    else:
        number = f"#{task.general}" if task.general else f"id {task.id}"
        subject = f"{number} «{task.title}»"
    return f"[{event.kind.value}] {subject}: {headline}"


class _Missing(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "?"
