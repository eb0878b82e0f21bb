"""What the emulated PlanFix account holds: tasks, statuses, clock, quota,
sessions, the action log and saved filters (the change feeds read them), and
the faults queued for injection. Shared by the HTTP threads
under one lock; everything here is plain data, JSON in and out."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DATE_FMT = "%d-%m-%Y"
DATETIME_FMT = "%d-%m-%Y %H:%M"

# The fields a task may carry, by their PlanFix XML names. "id" is given by the
# emulator; "access": false makes task.get answer 3008 (no access).
TASK_FIELDS = frozenset(
    {
        "id", "general", "title", "description", "importance", "status", "statusSet",
        "checkResult", "owner", "parent", "project", "client", "beginDateTime",
        "startTime", "endTime", "isNotAcceptedInTime", "starred", "workers", "members",
        "auditors", "type", "template", "duration", "durationUnit", "isSummary",
        "customData", "periodicity", "access",
        "garbled",  # {tag: text}: served as is, unchecked (a card PlanFix got wrong)
    }
)  # fmt: skip

STATUS_SETS: dict[int, tuple[str, list[tuple[int, str, bool]]]] = {
    # set id: (name, [(status id, name, is active)])
    1: (
        "Стандартный процесс",
        [
            (1, "Новая", True),
            (2, "В работе", True),
            (3, "Завершённая", False),
            (4, "Отложенная", True),
            (5, "Отклонённая", False),
            (6, "Выполненная", False),
            (7, "Отменённая", False),
        ],
    ),
    2: (
        "Разработка",
        [
            (1, "Новая", True),
            (2, "В работе", True),
            (101, "На ревью", True),
            (102, "Тестирование", True),
            (3, "Завершённая", False),
            (7, "Отменённая", False),
        ],
    ),
}

FAULT_KINDS = frozenset(
    {
        "http_error",  # HTTP `status` (default 502) with an HTML page
        "slow",  # answer after `delay_s`
        "trickle",  # the answer's body one byte every `delay_s`
        "stale_remaining",  # a good answer whose X-RateLimit-Remaining says 0
        "malformed",  # a truncated XML document
        "html",  # HTTP 200 with an HTML page
        "wrong_root",  # well-formed XML, not a <response>
        "error",  # <response status="error"><code>`code`</code>
        "xml_bomb",  # billion laughs
        "xxe",  # an external entity pointing at a local file
        "huge",  # a 10 MB body
        "non_utf8",  # a body in cp1251 that claims to be UTF-8
        "reset",  # the connection closed with no answer
    }
)


class ControlError(ValueError):
    """A control request the emulator cannot honour; answered with HTTP 400."""


@dataclass
class Fault:
    kind: str
    times: int = 1  # how many requests it hits; -1 = until cleared
    method: str | None = None  # only requests to this method
    task_id: int | None = None  # only requests about this task
    status: int = 502
    code: str = "0000"
    delay_s: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ControlError(f"unknown fault keys: {sorted(unknown)}")
        fault = cls(**data)
        if fault.kind not in FAULT_KINDS:
            raise ControlError(f"unknown fault kind {fault.kind!r}; known: {sorted(FAULT_KINDS)}")
        return fault

    def matches(self, method: str, task_ids: frozenset[int]) -> bool:
        if self.times == 0 or (self.method and self.method != method):
            return False
        return self.task_id is None or self.task_id in task_ids


@dataclass
class Settings:
    account: str = "demo"
    api_key: str = "emulator-api-key"
    token: str = "emulator-token"
    login: str = "robot"
    password: str = "robot-password"
    signature_key: str | None = None  # when set, every request must be signed
    timezone: str = "Europe/Moscow"
    daily_quota: int = 5000
    rps_limit: float | None = None  # requests per second; over it: HTTP 429
    send_remaining: bool = True  # the X-RateLimit-Remaining header
    supports_multi: bool = True
    multi_cost: str = "one"  # "one" request per getMulti, or "per_task"
    shape: str = "modern"  # "modern" (names, members, …) or "seed" (the 2013 card)
    session_ttl_s: float = 3600.0
    close_to_deadline_s: float = 24 * 3600.0
    other_dc_accounts: list[str] = field(default_factory=list)  # answered with 0024
    # Unconfirmed in PlanFix: whether an overdue or close-to-deadline flip moves
    # a task's last-change date (task.getList filter 38). Off: it does not.
    flip_moves_last_change: bool = False
    # The change feeds this server has; the others answer 0008 (an older server).
    feed_methods: list[str] = field(
        default_factory=lambda: ["task.getList", "action.getListByPeriod"]
    )
    # A scenario's "Послать HTTP-запрос" on every change (see push.py); "" = none.
    push_url: str = ""
    push_header: str = "X-Notifier-Secret"
    push_secret: str = ""
    push_body: str = '{"number": {{Задача.Номер}}}'
    push_content_type: str = "application/json"
    push_retry_s: list[float] = field(default_factory=lambda: [900.0, 1800.0, 3600.0, 3600.0])

    def update(self, data: dict[str, Any]) -> None:
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise ControlError(f"unknown setting {key!r}")
            setattr(self, key, value)
        if self.shape not in ("modern", "seed") or self.multi_cost not in ("one", "per_task"):
            raise ControlError("shape is modern|seed, multi_cost is one|per_task")


class Clock:
    """Real time plus an offset, or frozen; moved through the control API."""

    def __init__(self) -> None:
        self.offset_s = 0.0
        self.frozen: float | None = None

    def now_ts(self) -> float:
        return self.frozen if self.frozen is not None else time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        if self.frozen is not None:
            self.frozen += seconds
        else:
            self.offset_s += seconds

    def set(self, when: datetime, *, freeze: bool) -> None:
        target = when.timestamp()
        if freeze:
            self.frozen = target
        else:
            self.frozen = None
            self.offset_s = target - time.time()


class Account:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.lock = threading.RLock()
        self.clock = Clock()
        self.tasks: dict[int, dict[str, Any]] = {}
        self.next_id = 1001
        self.next_general = 1
        self.sessions: dict[str, float] = {}  # sid → expiry (clock seconds)
        self.faults: list[Fault] = []
        self.quota_day: date | None = None
        self.quota_used = 0
        self.requests_by_method: dict[str, int] = {}
        self.last_request_ts: float | None = None
        self.changed_at: dict[int, float] = {}  # task id → its last-change date
        self.deadline_set_at: dict[int, float] = {}  # task id → when endTime was last set
        self.actions: list[dict[str, Any]] = []  # the action log, oldest first
        self.saved_filters: dict[int, dict[str, Any]] = {}  # id → conditions (see matches)
        self.on_change: Callable[[dict[str, Any]], None] | None = None  # the pusher's
        # The latest push attempts (push.py); a long bench keeps the last 10,000.
        self.push_log: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.pushes_made = 0

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ts(), self.tz)

    # --- tasks --------------------------------------------------------------------

    def add_task(self, data: dict[str, Any]) -> dict[str, Any]:
        check_task_fields(data)
        task = {
            "title": "",
            "importance": "AVERAGE",
            "status": 2,
            "statusSet": 1,
            "beginDateTime": self.now().strftime(DATETIME_FMT),
            "type": "task",
            **data,
        }
        task.setdefault("id", self.next_id)
        task.setdefault("general", self.next_general)
        if task["id"] in self.tasks:
            raise ControlError(f"task {task['id']} exists already")
        self.next_id = max(self.next_id, int(task["id"])) + 1
        self.next_general = max(self.next_general, int(task["general"])) + 1
        self.tasks[int(task["id"])] = task
        self.changed_at[int(task["id"])] = self.clock.now_ts()
        self.deadline_set_at[int(task["id"])] = self.clock.now_ts()
        return task

    def change_task(
        self, task_id: int, changes: dict[str, Any], *, silent: bool = False
    ) -> dict[str, Any]:
        """Change fields; every change is logged as an action and moves the
        last-change date, except a ``silent`` one (PlanFix's ``<silent>1``
        through the API), which leaves no trace a feed could see."""
        check_task_fields(changes)
        if "id" in changes and changes["id"] != task_id:
            raise ControlError("a task's id cannot change")
        task = self.task(task_id)
        before = dict(task)
        for key, value in changes.items():
            if value is None:
                task.pop(key, None)
            else:
                task[key] = value
        if before.get("endTime") != task.get("endTime"):
            self.deadline_set_at[task_id] = self.clock.now_ts()
        if not silent and task != before:
            self._log_change(task_id, before, task)
        return task

    def _log_change(self, task_id: int, before: dict[str, Any], after: dict[str, Any]) -> None:
        now = self.clock.now_ts()
        self.changed_at[task_id] = now
        action: dict[str, Any] = {"id": len(self.actions) + 1, "ts": now, "task": task_id}
        if before.get("status") != after.get("status"):
            action["type"] = "STATUSCHANGED"
            action["statusChange"] = {
                "oldStatus": before.get("status", 2),
                "newStatus": after.get("status", 2),
            }
        else:
            action["type"] = "TASKCHANGED"
        if before.get("endTime") != after.get("endTime"):
            action["taskExpectDateChanged"] = {
                "oldDate": before.get("endTime") or "",
                "newDate": after.get("endTime") or "",
            }
        self.actions.append(action)
        if self.on_change is not None:
            self.on_change(dict(after))

    def flips(self, task: dict[str, Any]) -> list[tuple[str, float]]:
        """The time-driven actions of a task so far: (type, when) for becoming
        close to its deadline and overdue, on our clock (an active task only)."""
        deadline = self.deadline(task)
        if deadline is None or not self.is_active(task):
            return []
        now, due = self.clock.now_ts(), deadline.timestamp()
        set_at = self.deadline_set_at.get(int(task["id"]), 0.0)  # no flip before the deadline was
        happened = [
            ("TASKCLOSETODEADLINE", max(due - self.settings.close_to_deadline_s, set_at)),
            ("TASKOVERDUED", max(due, set_at)),
        ]
        return [(kind, at) for kind, at in happened if at <= now]

    def last_change(self, task: dict[str, Any]) -> float:
        changed = self.changed_at.get(int(task["id"]), 0.0)
        if self.settings.flip_moves_last_change:
            changed = max([changed, *(at for _, at in self.flips(task))])
        return changed

    def in_filter(self, task: dict[str, Any], conditions: dict[str, Any]) -> bool:
        """A saved filter's conditions, all of which must hold: ``project``
        (id), ``status`` (ids), ``worker`` (a user id), ``tasks`` (ids)."""
        for key, wanted in conditions.items():
            if key == "project" and ref_id(task.get("project")) != wanted:
                return False
            if key == "status" and task.get("status", 2) not in wanted:
                return False
            if key == "worker" and wanted not in worker_ids(task):
                return False
            if key == "tasks" and task["id"] not in wanted:
                return False
        return True

    def save_filter(self, filter_id: int, conditions: dict[str, Any]) -> dict[str, Any]:
        unknown = set(conditions) - {"project", "status", "worker", "tasks"}
        if unknown:
            raise ControlError(f"unknown filter conditions: {sorted(unknown)}")
        self.saved_filters[filter_id] = conditions
        return {"id": filter_id, **conditions}

    def task(self, task_id: int) -> dict[str, Any]:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise ControlError(f"no task {task_id}") from None

    def task_by_general(self, general: int) -> dict[str, Any] | None:
        return next((t for t in self.tasks.values() if t.get("general") == general), None)

    def is_active(self, task: dict[str, Any]) -> bool:
        statuses = STATUS_SETS.get(int(task.get("statusSet") or 1), STATUS_SETS[1])[1]
        return next((active for sid, _, active in statuses if sid == task.get("status")), True)

    def deadline(self, task: dict[str, Any]) -> datetime | None:
        raw = task.get("endTime")
        if not raw:
            return None
        if " " in raw:
            return datetime.strptime(raw, DATETIME_FMT).replace(tzinfo=self.tz)
        day = datetime.strptime(raw, DATE_FMT).replace(tzinfo=self.tz)
        return day + timedelta(days=1)  # a date-only deadline lasts the whole day

    def flags(self, task: dict[str, Any]) -> tuple[bool, bool]:
        """(isOverdued, isCloseToDeadline) as PlanFix computes them, on our clock."""
        deadline = self.deadline(task)
        if deadline is None or not self.is_active(task):
            return False, False
        left = (deadline - self.now()).total_seconds()
        return left < 0, 0 <= left <= self.settings.close_to_deadline_s

    # --- quota and sessions -----------------------------------------------------------

    def count_request(self, method: str, cost: int = 1) -> bool:
        """Count one request; False when the day's quota was already spent."""
        self.requests_by_method[method] = self.requests_by_method.get(method, 0) + 1
        self._roll_day()
        if self.quota_used >= self.settings.daily_quota:
            return False
        self.quota_used += cost
        return True

    def set_quota_used(self, used: int) -> None:
        self._roll_day()
        self.quota_used = used

    def _roll_day(self) -> None:
        """The quota day ends at midnight in the account's zone."""
        today = self.now().date()
        if self.quota_day != today:
            self.quota_day, self.quota_used = today, 0

    @property
    def quota_remaining(self) -> int:
        return max(0, self.settings.daily_quota - self.quota_used)

    def new_session(self) -> str:
        sid = secrets.token_hex(16)
        self.sessions[sid] = self.clock.now_ts() + self.settings.session_ttl_s
        return sid

    def session_valid(self, sid: str) -> bool:
        expiry = self.sessions.get(sid)
        return expiry is not None and expiry > self.clock.now_ts()

    # --- faults -----------------------------------------------------------------------

    def take_fault(self, method: str, task_ids: frozenset[int]) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, task_ids):
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    def snapshot(self) -> dict[str, Any]:
        return {
            "now": self.now().isoformat(),
            "quota": {
                "day": self.quota_day.isoformat() if self.quota_day else None,
                "used": self.quota_used,
                "limit": self.settings.daily_quota,
                "remaining": self.quota_remaining,
            },
            "requests": dict(self.requests_by_method),
            "tasks": len(self.tasks),
            "sessions": len(self.sessions),
            "faults": [asdict(f) for f in self.faults if f.times != 0],
            "settings": {
                k: v
                for k, v in asdict(self.settings).items()
                if k not in ("password", "push_secret")
            },
            "pushes": self.pushes_made,
        }


def ref_id(value: Any) -> int | None:
    """A reference field (project, owner…): a dict with an id, or the id."""
    if isinstance(value, dict):
        value = value.get("id")
    return int(value) if value else None


def worker_ids(task: dict[str, Any]) -> set[int]:
    return {int(person["id"]) for person in (task.get("workers") or {}).get("users", [])}


def check_task_fields(data: dict[str, Any]) -> None:
    unknown = set(data) - TASK_FIELDS
    if unknown:
        raise ControlError(f"unknown task fields: {sorted(unknown)}")
    for key in ("endTime", "startTime", "beginDateTime"):
        raw = data.get(key)
        if raw:
            try:
                datetime.strptime(raw, DATETIME_FMT if " " in raw else DATE_FMT)
            except (TypeError, ValueError):
                raise ControlError(
                    f"{key} is dd-mm-yyyy or dd-mm-yyyy hh:mm, got {raw!r}"
                ) from None
