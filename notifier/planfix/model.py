"""The task card as PlanFix sends it, as immutable values the differ can compare.

Both shapes are accepted: the seed's ``<users><id/><id/></users>`` and the
newer ``<users><user><id/><name/></user></users>``. Empty elements mean "not
set"; unknown elements are ignored; dates carry no offset and are read in the
API user's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from lxml import etree

from .envelope import text_of
from .errors import BadCardError, BadResponseError

FINISHED_SYSTEM_STATUSES = frozenset({3, 5, 6, 7})  # completed, rejected, done, canceled


@dataclass(frozen=True, slots=True)
class Ref:
    """A user, group, project, client or task reference; ``name`` only on newer servers."""

    id: int
    name: str | None = None


@dataclass(frozen=True, slots=True)
class People:
    users: tuple[Ref, ...] = ()
    groups: tuple[Ref, ...] = ()

    @property
    def ids(self) -> tuple[frozenset[int], frozenset[int]]:
        return frozenset(u.id for u in self.users), frozenset(g.id for g in self.groups)


@dataclass(frozen=True, slots=True)
class EndCondition:
    type: str | None = None  # ENDLESS | BYCOUNT | BYENDDATE
    date: datetime | None = None
    repeat_count: int | None = None


@dataclass(frozen=True, slots=True)
class Periodicity:
    kind: str  # daily | weekly | monthly
    type: str | None = None
    shift: int | None = None
    days: tuple[int, ...] = ()  # weekly: 1 = Monday … 7 = Sunday
    month: int | None = None
    day: int | None = None
    day_type: str | None = None
    start_date: datetime | None = None
    end_condition: EndCondition | None = None
    notify_type: int | None = None  # 0 = working day, 1 = week
    notify_day: int | None = None


@dataclass(frozen=True, slots=True)
class CustomValue:
    field_id: int
    field_name: str | None
    value: str | None
    text: str | None


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    general: int | None = None  # the task number people see, in /task/GENERAL links
    title: str = ""
    description: str = ""
    importance: str | None = None  # AVERAGE | HIGH
    status: int | None = None
    status_set: int | None = None
    check_result: bool = False
    owner: Ref | None = None
    parent: Ref | None = None
    project: Ref | None = None
    client: Ref | None = None
    begin_datetime: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    end_time_has_time: bool = True  # False: a date-only deadline (the whole day)
    is_overdued: bool = False
    is_close_to_deadline: bool = False
    is_not_accepted_in_time: bool = False
    starred: bool = False
    workers: People = field(default_factory=People)
    members: People = field(default_factory=People)
    auditors: People = field(default_factory=People)
    type: str | None = None
    template: int | None = None
    duration: int | None = None
    duration_unit: str | None = None
    is_summary: bool = False
    periodicity: Periodicity | None = None
    custom_data: tuple[CustomValue, ...] = ()

    @property
    def deadline(self) -> datetime | None:
        """The moment ``isOverdued`` can flip: ``endTime``, or the end of its day."""
        if self.end_time is None or self.end_time_has_time:
            return self.end_time
        return self.end_time + timedelta(days=1)


# --- reading values ------------------------------------------------------------


def parse_datetime(raw: str, tz: ZoneInfo) -> tuple[datetime, bool]:
    """``dd-mm-yyyy hh:mm`` or ``dd-mm-yyyy`` → (aware datetime, has a time)."""
    raw = raw.strip()
    try:
        if " " in raw:
            parsed = datetime.strptime(raw, "%d-%m-%Y %H:%M")
            return parsed.replace(tzinfo=tz), True
        day = datetime.strptime(raw, "%d-%m-%Y").date()
    except ValueError:
        raise BadResponseError(f"unreadable date {raw[:40]!r}") from None
    return datetime.combine(day, time(), tzinfo=tz), False


def format_datetime(value: datetime | date, tz: ZoneInfo, *, with_time: bool = True) -> str:
    if isinstance(value, datetime):
        local = value.astimezone(tz) if value.tzinfo else value
        return local.strftime("%d-%m-%Y %H:%M" if with_time else "%d-%m-%Y")
    return value.strftime("%d-%m-%Y")


def _int(raw: str | None, what: str) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadResponseError(f"{what} is not a number: {raw[:40]!r}") from None


def _bool(raw: str | None, what: str) -> bool:
    if raw is None or raw == "0":
        return False
    if raw == "1":
        return True
    if raw.lower() in ("true", "false"):  # seen from some servers; harmless to accept
        return raw.lower() == "true"
    raise BadResponseError(f"{what} is not 0/1: {raw[:40]!r}")


class _Reader:
    """Reads one card; every error names the field, never half-builds a Task."""

    def __init__(self, card: etree._Element, tz: ZoneInfo) -> None:
        self.card = card
        self.tz = tz

    def text(self, path: str) -> str | None:
        return text_of(self.card, path)

    def integer(self, path: str) -> int | None:
        return _int(self.text(path), path)

    def flag(self, path: str) -> bool:
        return _bool(self.text(path), path)

    def when(self, path: str) -> tuple[datetime | None, bool]:
        raw = self.text(path)
        if raw is None:
            return None, True
        try:
            return parse_datetime(raw, self.tz)
        except BadResponseError as exc:
            raise BadResponseError(f"{path}: {exc.reason}") from None

    def ref(self, path: str, *, zero_is_none: bool = True) -> Ref | None:
        element = self.card.find(path)
        if element is None:
            return None
        ref_id = _int(text_of(element, "id"), f"{path}.id")
        if ref_id is None or (zero_is_none and ref_id == 0):
            return None
        return Ref(ref_id, text_of(element, "name"))

    def people(self, path: str) -> People:
        element = self.card.find(path)
        if element is None:
            return People()
        return People(
            users=_refs(element.find("users"), "user", f"{path}.users"),
            groups=_refs(element.find("groups"), "group", f"{path}.groups"),
        )


def _refs(container: etree._Element | None, item_tag: str, what: str) -> tuple[Ref, ...]:
    if container is None:
        return ()
    refs: list[Ref] = []
    for child in container:
        if child.tag == "id":  # the seed's shape: <users><id/><id/></users>
            ref_id = _int((child.text or "").strip() or None, f"{what}.id")
            if ref_id is not None:
                refs.append(Ref(ref_id))
        elif child.tag == item_tag:  # newer: <users><user><id/><name/></user></users>
            ref_id = _int(text_of(child, "id"), f"{what}.{item_tag}.id")
            if ref_id is not None:
                refs.append(Ref(ref_id, text_of(child, "name")))
    return tuple(refs)


def _periodicity(read: _Reader) -> Periodicity | None:
    element = read.card.find("periodicity")
    if element is None:
        return None
    sub = _Reader(element, read.tz)
    kind = next((k for k in ("daily", "weekly", "monthly") if element.find(k) is not None), None)
    if kind is None:
        return None
    days_raw = sub.text(f"{kind}/days")
    try:
        days = tuple(int(d) for d in days_raw.split(",") if d.strip()) if days_raw else ()
    except ValueError:
        raise BadResponseError(f"periodicity days unreadable: {days_raw!r}") from None
    end: EndCondition | None = None
    if element.find("endCondition") is not None:
        end = EndCondition(
            type=sub.text("endCondition/type"),
            date=sub.when("endCondition/date")[0],
            repeat_count=sub.integer("endCondition/repeatCount"),
        )
    return Periodicity(
        kind=kind,
        type=sub.text(f"{kind}/type"),
        shift=sub.integer(f"{kind}/shift"),
        days=days,
        month=sub.integer(f"{kind}/month"),
        day=sub.integer(f"{kind}/day"),
        day_type=sub.text(f"{kind}/dayType"),
        start_date=sub.when("startDate")[0],
        end_condition=end,
        notify_type=sub.integer("notify/type"),
        notify_day=sub.integer("notify/day"),
    )


def _custom_data(read: _Reader) -> tuple[CustomValue, ...]:
    container = read.card.find("customData")
    if container is None:
        return ()
    values = []
    for item in container.iterfind("customValue"):
        field_id = _int(text_of(item, "field/id"), "customData.field.id")
        if field_id is None:
            continue
        values.append(
            CustomValue(
                field_id=field_id,
                field_name=text_of(item, "field/name"),
                value=text_of(item, "value"),
                text=text_of(item, "text"),
            )
        )
    return tuple(values)


def parse_task(card: etree._Element, tz: ZoneInfo, *, task_id: int | None = None) -> Task:
    """One ``<task>`` card → :class:`Task`. The seed's ``task.get`` answer has
    no ``<id>``; then the id asked for is used."""
    read = _Reader(card, tz)
    own_id = read.integer("id")
    if own_id is None:
        own_id = task_id
    if own_id is None:
        raise BadResponseError("a task card without an id")
    if task_id is not None and own_id != task_id:
        raise BadResponseError(f"asked for task {task_id}, got task {own_id}")
    try:
        return _task(card, read, own_id)
    except BadResponseError as exc:
        raise BadCardError(own_id, exc.reason) from None


def _task(card: etree._Element, read: _Reader, own_id: int) -> Task:
    end_time, end_has_time = read.when("endTime")
    return Task(
        id=own_id,
        general=read.integer("general"),
        title=read.text("title") or "",
        description=(card.findtext("description") or "").strip(),
        importance=read.text("importance"),
        status=read.integer("status"),
        status_set=read.integer("statusSet"),
        check_result=read.flag("checkResult"),
        owner=read.ref("owner"),
        parent=read.ref("parent"),
        project=read.ref("project"),
        client=read.ref("client"),
        begin_datetime=read.when("beginDateTime")[0],
        start_time=read.when("startTime")[0],
        end_time=end_time,
        end_time_has_time=end_has_time,
        is_overdued=read.flag("isOverdued"),
        is_close_to_deadline=read.flag("isCloseToDeadline"),
        is_not_accepted_in_time=read.flag("isNotAcceptedInTime"),
        starred=read.flag("starred"),
        workers=read.people("workers"),
        members=read.people("members"),
        auditors=read.people("auditors"),
        type=read.text("type"),
        template=read.integer("template/id"),
        duration=read.integer("duration"),
        duration_unit=read.text("durationUnit"),
        is_summary=read.flag("isSummary"),
        periodicity=_periodicity(read),
        custom_data=_custom_data(read),
    )


@dataclass(frozen=True, slots=True)
class TaskStatus:
    id: int
    name: str
    is_active: bool = True
    has_deadline: bool = True


@dataclass(frozen=True, slots=True)
class StatusSet:
    id: int
    name: str
