"""The change feeds, as PlanFix serves them: ``task.getList`` (a page of cards
by target, project, status and complex filters, or only the count) and
``action.getListByPeriod`` (the action log of every task, by period).

Dates in requests are ``dd-mm-yyyy hh:mm`` in the API user's zone, so minute
precision; a complex date filter is
``<filter><type>38</type><operator>gt</operator><value><datetype>
anotherdate_withtime</datetype><datefrom>…</datefrom></value></filter>``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lxml import etree

from .state import DATETIME_FMT, Account, ref_id, worker_ids

PAGE_LIMIT = 100
FLIP_ID_BASE = 1_000_000_000  # ids of the time-driven actions, apart from the logged ones

TaskTest = Callable[[dict[str, Any]], bool]


class FeedError(Exception):
    """A request the server refuses; ``code`` is PlanFix's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _int(text: str | None, default: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise FeedError("0009") from None


def _date(account: Account, text: str | None) -> float:
    try:
        when = datetime.strptime((text or "").strip(), DATETIME_FMT)
    except ValueError:
        raise FeedError("0009") from None
    return when.replace(tzinfo=account.tz).timestamp()


def page_of(root: etree._Element) -> tuple[int, int]:
    """(page, size): page 0 asks only for the count; size at most 100."""
    page = _int(root.findtext("pageCurrent"), 1)
    size = _int(root.findtext("pageSize"), PAGE_LIMIT) or PAGE_LIMIT
    return max(0, page), min(PAGE_LIMIT, max(1, size))


# --- task.getList ---------------------------------------------------------------------


def _complex(account: Account, spec: etree._Element) -> TaskTest:
    kind = _int(spec.findtext("type"), 0)
    operator = (spec.findtext("operator") or "equal").strip()
    value = spec.find("value")
    text = (spec.findtext("value") or "").strip()
    if kind in (38, 79):  # last change (79: or comment; the emulator has no comments)
        since = _date(account, value.findtext("datefrom") if value is not None else None)
        if operator == "gt":
            return lambda t: account.last_change(t) > since
        if operator == "lt":
            return lambda t: account.last_change(t) < since
        raise FeedError("0009")
    if kind == 14:  # planned end: anotherperiod_withtime (whole minutes, both ends in)
        start = _date(account, value.findtext("datefrom") if value is not None else None)
        end = _date(account, value.findtext("dateto") if value is not None else None) + 59.999

        def ends_within(task: dict[str, Any]) -> bool:
            deadline = account.deadline(task)
            return deadline is not None and start <= deadline.timestamp() <= end

        return ends_within
    if kind == 10:  # status: ids separated by ;
        ids = {_int(part, 0) for part in text.split(";") if part.strip()}
        inside: TaskTest = lambda t: t.get("status", 2) in ids  # noqa: E731
        return inside if operator == "equal" else lambda t: not inside(t)
    if kind in (17, 29):  # overdue, not overdue
        overdue = kind == 17
        return lambda t: account.flags(t)[0] == overdue
    if kind == 2:  # a worker
        user = _int(text, 0)
        return lambda t: (user in worker_ids(t)) == (operator == "equal")
    raise FeedError("0009")


def task_tests(account: Account, root: etree._Element) -> list[TaskTest]:
    tests: list[TaskTest] = [lambda t: t.get("access", True)]
    target = (root.findtext("target") or "all").strip()
    if target.isdigit():
        conditions = account.saved_filters.get(int(target))
        if conditions is None:
            raise FeedError("0009")
        tests.append(lambda t: account.in_filter(t, conditions))
    elif target not in ("all", "in", "out", ""):
        raise FeedError("0009")
    project = root.findtext("project/id")
    if project is not None and project.strip():
        project_id = _int(project, 0)
        tests.append(lambda t: ref_id(t.get("project")) == project_id)
    words = (root.findtext("filter") or "").replace(",", " ").split()
    if "ACTIVE" in words:
        tests.append(account.is_active)
    if "OVERDUE" in words:
        tests.append(lambda t: account.flags(t)[0])
    for spec in root.iterfind("filters/filter"):
        tests.append(_complex(account, spec))
    return tests


def task_list(
    account: Account, root: etree._Element, card: Callable[[dict[str, Any]], etree._Element]
) -> etree._Element:
    page, size = page_of(root)
    tests = task_tests(account, root)
    found = [t for _, t in sorted(account.tasks.items()) if all(test(t) for test in tests)]
    chosen = found[(page - 1) * size : page * size] if page else []
    container = etree.Element("tasks", count=str(len(chosen)), totalCount=str(len(found)))
    for task in chosen:
        container.append(card(task))
    return container


# --- action.getListByPeriod -----------------------------------------------------------


def _sub(parent: etree._Element, tag: str, text: object = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def all_actions(account: Account) -> list[dict[str, Any]]:
    """The logged actions and the time-driven flips so far, oldest first."""
    flips = [
        {"id": FLIP_ID_BASE + 2 * task_id + n, "ts": at, "task": task_id, "type": kind}
        for task_id, task in account.tasks.items()
        for n, (kind, at) in enumerate(account.flips(task))
    ]
    return sorted([*account.actions, *flips], key=lambda a: (a["ts"], a["id"]))


def action_list(account: Account, root: etree._Element) -> etree._Element:
    page, size = page_of(root)
    start = _date(account, root.findtext("fromDate"))
    end = _date(account, root.findtext("toDate")) + 59.999  # the whole last minute
    only = root.findtext("task/id")
    task_id = _int(only, 0) if only is not None and only.strip() else None
    found = [
        a
        for a in all_actions(account)
        if start <= a["ts"] <= end and (task_id is None or a["task"] == task_id)
        and a["task"] in account.tasks
    ]  # fmt: skip
    if (root.findtext("sort") or "desc").strip() != "asc":
        found.reverse()
    chosen = found[(page - 1) * size : page * size] if page else []
    container = etree.Element("actions", count=str(len(chosen)), totalCount=str(len(found)))
    for action in chosen:
        item = _sub(container, "action")
        _sub(item, "id", action["id"])
        _sub(item, "type", action["type"])
        when = datetime.fromtimestamp(action["ts"], account.tz)
        _sub(item, "dateTime", when.strftime(DATETIME_FMT))
        task = _sub(item, "task")
        _sub(task, "id", action["task"])
        _sub(task, "general", account.tasks[action["task"]]["general"])
        for tag in ("statusChange", "taskExpectDateChanged"):
            if tag in action:
                change = _sub(item, tag)
                for key, value in action[tag].items():
                    _sub(change, key, value)
    return container
