"""The change feeds, as requests and answers: ``task.getList`` (cards by saved
filter, project, last change…) and ``action.getListByPeriod`` (what happened,
account-wide). Dates go out as ``dd-mm-yyyy hh:mm`` in the API user's zone:
minute precision, so a caller overlaps its windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from lxml import etree

from .envelope import Body, Value, text_of
from .errors import BadCardError, BadResponseError
from .model import Task, format_datetime, parse_datetime, parse_task

PAGE_SIZE = 100  # PlanFix's most per page


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What ``task.getList`` is asked for; every condition must hold."""

    target: str = "all"  # all | in | out | a saved filter's id
    project: int | None = None
    changed_since: datetime | None = None  # last change after this (filter 38)
    deadline_between: tuple[datetime, datetime] | None = None  # endTime in (filter 14)
    active: bool = False
    overdue: bool = False

    def body(self, tz: ZoneInfo, page: int) -> Body:
        body: list[tuple[str, Value]] = [("target", self.target)]
        if self.project is not None:
            body.append(("project", [("id", self.project)]))
        words = [w for w, on in (("ACTIVE", self.active), ("OVERDUE", self.overdue)) if on]
        if words:
            body.append(("filter", " ".join(words)))
        filters: list[tuple[str, Value]] = []
        if self.changed_since is not None:
            since = format_datetime(self.changed_since, tz)
            value: list[tuple[str, Value]] = [
                ("datetype", "anotherdate_withtime"),
                ("datefrom", since),
            ]
            rule: list[tuple[str, Value]] = [("type", 38), ("operator", "gt"), ("value", value)]
            filters.append(("filter", rule))
        if self.deadline_between is not None:
            start, end = (format_datetime(when, tz) for when in self.deadline_between)
            period: list[tuple[str, Value]] = [
                ("datetype", "anotherperiod_withtime"),
                ("datefrom", start),
                ("dateto", end),
            ]
            filters.append(("filter", [("type", 14), ("operator", "equal"), ("value", period)]))
        if filters:
            body.append(("filters", filters))
        body += [("pageCurrent", page), ("pageSize", PAGE_SIZE)]
        return body


@dataclass(frozen=True, slots=True)
class TaskPage:
    tasks: list[Task]
    unreadable: list[int]  # cards we could not read: ask each alone with task.get
    total: int  # cards matching, on every page


def parse_task_page(container: etree._Element, tz: ZoneInfo) -> TaskPage:
    tasks: list[Task] = []
    unreadable: list[int] = []
    for card in container.iterfind("task"):
        try:  # each card on its own: one PlanFix got wrong fails only its task
            tasks.append(parse_task(card, tz))
        except BadCardError as exc:
            unreadable.append(exc.task_id)
        except BadResponseError:
            continue  # not even an id: nothing to ask again
    return TaskPage(tasks, unreadable, _count(container, len(tasks) + len(unreadable)))


@dataclass(frozen=True, slots=True)
class Action:
    """One entry of the action log: what happened to which task, and when."""

    id: int
    kind: str  # STATUSCHANGED, TASKOVERDUED, TASKCLOSETODEADLINE, …
    at: datetime
    task_id: int
    old_status: int | None = None
    new_status: int | None = None


def actions_body(since: datetime, until: datetime, tz: ZoneInfo, page: int) -> Body:
    return [
        ("fromDate", format_datetime(since, tz)),
        ("toDate", format_datetime(until, tz)),
        ("pageCurrent", page),
        ("pageSize", PAGE_SIZE),
        ("sort", "asc"),
    ]


def parse_actions(container: etree._Element, tz: ZoneInfo) -> tuple[list[Action], int]:
    """The page's actions (an entry we cannot read is left out: a feed only
    says which tasks to read, so a lost entry costs time, never an alert)."""
    actions: list[Action] = []
    for item in container.iterfind("action"):
        try:
            actions.append(_action(item, tz))
        except (BadResponseError, ValueError):
            continue
    return actions, _count(container, len(actions))


def _action(item: etree._Element, tz: ZoneInfo) -> Action:
    def number(path: str) -> int | None:
        raw = text_of(item, path)
        return int(raw) if raw else None

    task_id, action_id = number("task/id"), number("id")
    if task_id is None or action_id is None:
        raise BadResponseError("an action without a task or an id")
    at, _ = parse_datetime(text_of(item, "dateTime") or "", tz)
    return Action(
        id=action_id,
        kind=text_of(item, "type") or "",
        at=at,
        task_id=task_id,
        old_status=number("statusChange/oldStatus"),
        new_status=number("statusChange/newStatus"),
    )


def _count(container: etree._Element, default: int) -> int:
    try:
        return int(container.get("totalCount", default))
    except ValueError:
        return default
