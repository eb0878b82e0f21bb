"""Every way a PlanFix request can fail, as typed exceptions.

Callers decide by :class:`ErrorClass`, never by the numeric code: a transient
error is retried later, a fatal one needs the operator, a task-level one
concerns that task only, a quota one stops polling until the reset.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorClass(enum.Enum):
    TRANSIENT = "transient"  # retry later; nothing is wrong with us or the task
    FATAL_CONFIG = "fatal-config"  # the operator must fix the config or the account
    TASK = "task-level"  # this task is gone or out of reach; others are fine
    QUOTA = "quota"  # daily limit spent: stop until the reset
    BUG = "bug"  # our request is malformed: log it, do not retry it


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str
    error_class: ErrorClass
    key: str = ""  # the configuration key to fix, where one is the cause


_E = ErrorClass
# The table of planfix-api.md ("Error codes that change behaviour"), plus the
# session codes the client handles itself before anything reaches a caller.
ERROR_CODES: dict[str, ErrorInfo] = {
    info.code: info
    for info in (
        ErrorInfo("0000", "unknown error on the PlanFix side", _E.TRANSIENT),
        ErrorInfo("0001", "invalid API key", _E.FATAL_CONFIG, "planfix.api_key"),
        ErrorInfo("0002", "the application is blocked", _E.FATAL_CONFIG),
        ErrorInfo("0003", "PlanFix could not parse our request XML", _E.BUG),
        ErrorInfo("0004", "unknown account", _E.FATAL_CONFIG, "planfix.account"),
        ErrorInfo("0005", "session expired", _E.TRANSIENT),
        ErrorInfo("0006", "invalid request signature", _E.FATAL_CONFIG, "planfix.signature_key"),
        ErrorInfo("0007", "daily request limit exceeded", _E.QUOTA),
        ErrorInfo("0008", "unknown API function", _E.FATAL_CONFIG),
        ErrorInfo("0009", "a required parameter is missing", _E.BUG),
        ErrorInfo("0010", "the account is frozen", _E.FATAL_CONFIG),
        ErrorInfo("0011", "PlanFix is being updated", _E.TRANSIENT),
        ErrorInfo("0012", "no such session or token", _E.FATAL_CONFIG, "planfix.token"),
        ErrorInfo("0014", "the API user is inactive", _E.FATAL_CONFIG),
        ErrorInfo("0020", "the API function is forbidden for this user", _E.FATAL_CONFIG),
        ErrorInfo("0021", "too many objects requested at once", _E.BUG),
        ErrorInfo("0022", "the API is not available on this plan", _E.FATAL_CONFIG),
        ErrorInfo("0023", "the API is not available on this plan", _E.FATAL_CONFIG),
        ErrorInfo(
            "0024",
            "the account lives in another data centre: set planfix.endpoint to one of "
            "https://api.planfix.ru/xml/, https://apiru.planfix.ru/xml/, "
            "https://api.planfix.com/xml/, https://api-sg.planfix.com/xml/, "
            "https://api-us.planfix.com/xml/",
            _E.FATAL_CONFIG,
            "planfix.endpoint",
        ),
        ErrorInfo(
            "1001", "wrong login or password", _E.FATAL_CONFIG, "planfix.login, planfix.password"
        ),
        ErrorInfo("3001", "the task does not exist", _E.TASK),
        ErrorInfo("3008", "no access to the task", _E.TASK),
        ErrorInfo("3014", "the task is being modified", _E.TRANSIENT),
    )
}

SESSION_CODES = frozenset({"0005", "0012"})  # login mode: log in again, retry once
UNSUPPORTED_CODES = frozenset({"0008", "0020"})  # a batch method may fall back
TASK_GONE_CODES = frozenset({"3001", "3008"})


class PlanfixError(Exception):
    """Base of every failure the client raises. Never carries a secret."""

    error_class: ErrorClass = ErrorClass.TRANSIENT

    def __init__(self, message: str, *, method: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.retry_after_s: float | None = None  # when the server said when to come back

    @property
    def transient(self) -> bool:
        return self.error_class is ErrorClass.TRANSIENT


class PlanfixApiError(PlanfixError):
    """PlanFix answered ``<response status="error"><code>…</code>``."""

    def __init__(self, code: str, *, method: str | None = None, server_message: str = "") -> None:
        info = ERROR_CODES.get(code)
        text = info.message if info else f"undocumented error code {code}"
        if server_message:
            text = f"{text} ({server_message[:200]})"
        where = f" in {method}" if method else ""
        fix = f"; a configuration error: check {info.key}" if info and info.key else ""
        super().__init__(f"PlanFix error {code}{where}: {text}{fix}", method=method)
        self.code = code
        # An undocumented code is treated like 0000: retry later, never alert.
        self.error_class = info.error_class if info else ErrorClass.TRANSIENT


class TransportError(PlanfixError):
    """No HTTP answer at all: connection refused or reset, timeout."""


class BadResponseError(PlanfixError):
    """An answer that is not a well-formed PlanFix response: an HTTP error
    status, HTML, truncated or oversized XML, a DTD, a wrong root, a field
    that cannot be read."""

    def __init__(self, reason: str, *, excerpt: str = "", method: str | None = None) -> None:
        shown = f": {excerpt!r}" if excerpt else ""
        where = f" to {method}" if method else ""
        super().__init__(f"bad PlanFix response{where}: {reason}{shown}", method=method)
        self.reason = reason
        self.excerpt = excerpt


class BadCardError(BadResponseError):
    """One task's card has a field we cannot read: that task's problem, not
    the server's (its neighbours in a batch are read as usual)."""

    error_class = ErrorClass.TASK

    def __init__(self, task_id: int, reason: str, *, method: str | None = None) -> None:
        super().__init__(f"task {task_id}: {reason}", method=method)
        self.task_id = task_id


class ConfigError(PlanfixError):
    """The client was set up in a way that cannot work (e.g. http:// to a remote host)."""

    error_class = ErrorClass.FATAL_CONFIG


class QuotaExhaustedError(PlanfixError):
    """Raised by a request gate that refuses to spend more of the daily budget."""

    error_class = ErrorClass.QUOTA


def is_task_gone(exc: BaseException) -> bool:
    return isinstance(exc, PlanfixApiError) and exc.code in TASK_GONE_CODES
