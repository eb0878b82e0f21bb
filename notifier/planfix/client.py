"""An async PlanFix XML API client on httpx.

Every request passes through :meth:`PlanfixClient._exchange`, which asks the
:class:`RequestGate` first (the quota ledger paces and counts there) and
reports each outcome, with ``X-RateLimit-Remaining``, back to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import httpx
from lxml import etree

from ..ops.errors import described
from .envelope import MAX_RESPONSE_BYTES, Body, build_request, excerpt, parse_response, text_of
from .errors import (
    SESSION_CODES,
    UNSUPPORTED_CODES,
    BadResponseError,
    ConfigError,
    ErrorClass,
    PlanfixApiError,
    PlanfixError,
    TransportError,
)
from .feeds import Action, TaskPage, TaskQuery, actions_body, parse_actions, parse_task_page
from .model import StatusSet, Task, TaskStatus, parse_task
from .statuses import StatusCatalog

MAX_BATCH = 100  # PlanFix returns at most 100 items per request


@dataclass(frozen=True, slots=True)
class ClientSettings:
    account: str
    api_key: str = field(repr=False)
    endpoint: str = "https://api.planfix.ru/xml/"
    token: str | None = field(default=None, repr=False)
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    signature_key: str | None = field(default=None, repr=False)
    timezone: str = "Europe/Moscow"
    timeout_s: float = 30.0
    max_response_bytes: int = MAX_RESPONSE_BYTES
    status_cache_s: float = 6 * 3600.0

    @property
    def secrets(self) -> tuple[str, ...]:
        values = (self.api_key, self.token, self.password, self.signature_key)
        return tuple(v for v in values if v)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What one HTTP exchange with PlanFix did, for the quota ledger and metrics."""

    method: str
    error: PlanfixError | None
    rate_limit_remaining: int | None
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


class RequestGate(Protocol):
    async def before_request(self, method: str) -> None:
        """Wait for the rate limit, or raise QuotaExhaustedError to refuse."""

    async def after_request(self, record: RequestRecord) -> None:
        """Count the request that was sent, successful or not."""


class OpenGate:
    """No pacing, no counting: for one-off tools and tests."""

    async def before_request(self, method: str) -> None:
        return None

    async def after_request(self, record: RequestRecord) -> None:
        return None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def private_transport(address: str) -> bool:
    """https://, or plain http:// that never leaves this machine: the only ways
    a key or a token may travel."""
    url = httpx.URL(address)
    return url.scheme == "https" or (url.scheme == "http" and is_loopback(url.host))


def check_endpoint(endpoint: str) -> httpx.URL:
    if private_transport(endpoint):
        return httpx.URL(endpoint)
    raise ConfigError(
        f"planfix.endpoint {endpoint!r}: PlanFix accepts HTTPS only "
        "(plain http:// is allowed for loopback hosts, e.g. the emulator)"
    )


TaskResult = Task | PlanfixError


class PlanfixClient:
    def __init__(
        self,
        settings: ClientSettings,
        *,
        gate: RequestGate | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.token and not (settings.login and settings.password):
            raise ConfigError("planfix: set token (token mode) or login and password")
        self.settings = settings
        self.gate: RequestGate = gate or OpenGate()
        self.tz = ZoneInfo(settings.timezone)
        self._url = check_endpoint(settings.endpoint)
        # Token mode: Basic api_key:token. Login mode: Basic api_key:X, then a sid.
        secret = settings.token if settings.token else "X"
        self._http = httpx.AsyncClient(
            auth=httpx.BasicAuth(settings.api_key, secret),
            timeout=httpx.Timeout(settings.timeout_s),
            headers={"Content-Type": "application/xml; charset=utf-8"},
            transport=transport,
            follow_redirects=False,
        )
        self._sid: str | None = None
        self._login_lock = asyncio.Lock()
        self.multi_supported: bool | None = None  # None: not tried yet
        self._catalog: StatusCatalog | None = None
        self._catalog_at = 0.0

    def __repr__(self) -> str:
        return f"PlanfixClient(account={self.settings.account!r}, endpoint={str(self._url)!r})"

    async def __aenter__(self) -> PlanfixClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def login_mode(self) -> bool:
        return not self.settings.token

    # --- the one path every request takes -------------------------------------

    async def _exchange(self, method: str, body: Body, sid: str | None) -> etree._Element:
        await self.gate.before_request(method)
        payload = build_request(
            method,
            self.settings.account,
            body,
            sid=sid,
            signature_key=self.settings.signature_key,
        )
        started = time.monotonic()
        remaining: int | None = None
        try:
            raw, remaining = await self._post(method, payload)
            root = parse_response(raw, method=method)
        except PlanfixError as exc:
            self._scrub(exc)
            await self.gate.after_request(
                RequestRecord(method, exc, remaining, time.monotonic() - started)
            )
            raise
        await self.gate.after_request(
            RequestRecord(method, None, remaining, time.monotonic() - started)
        )
        return root

    async def _post(self, method: str, payload: bytes) -> tuple[bytes, int | None]:
        """One POST. ``timeout_s`` caps the whole exchange — connect, send and
        every byte of the answer — not each read: a server that trickles its
        answer must not hold the poller for longer."""
        cap = self.settings.max_response_bytes
        try:
            async with (
                asyncio.timeout(self.settings.timeout_s),
                self._http.stream("POST", self._url, content=payload) as response,
            ):
                remaining = _int_header(response.headers, "X-RateLimit-Remaining")
                declared = _int_header(response.headers, "Content-Length")
                if declared is not None and declared > cap:
                    raise BadResponseError(f"larger than {cap} bytes", method=method)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise BadResponseError(f"larger than {cap} bytes", method=method)
        except (TimeoutError, httpx.TimeoutException):
            raise TransportError(
                f"PlanFix did not answer {method} within {self.settings.timeout_s:g} s",
                method=method,
            ) from None
        except httpx.HTTPError as exc:
            # The host and the cause ("[Errno 111] Connection refused"), never the URL's
            # query or a body: nothing secret travels in either part named here.
            host = httpx.URL(self.settings.endpoint).host
            raise TransportError(
                f"PlanFix ({host}) unreachable during {method}: {described(exc)}", method=method
            ) from None
        raw = bytes(body)
        if response.status_code != 200:
            error = BadResponseError(
                f"HTTP {response.status_code}", excerpt=excerpt(raw), method=method
            )
            error.retry_after_s = _retry_after(response.headers)
            raise error
        return raw, remaining

    def _scrub(self, exc: PlanfixError) -> None:
        """Secrets must never reach a log through an exception's text."""
        exc.message = self._redact(exc.message)
        exc.args = (exc.message,)
        if isinstance(exc, BadResponseError):
            exc.excerpt = self._redact(exc.excerpt)

    def _redact(self, text: str) -> str:
        for secret in (*self.settings.secrets, self._sid or ""):
            if secret:
                text = text.replace(secret, "***")
        return text

    # --- sessions --------------------------------------------------------------

    async def call(self, method: str, body: Body = ()) -> etree._Element:
        """One API call; in login mode with a session, renewed once if it expired."""
        if not self.login_mode:
            return await self._exchange(method, body, None)
        sid = await self._session()
        try:
            return await self._exchange(method, body, sid)
        except PlanfixApiError as exc:
            if exc.code not in SESSION_CODES:
                raise
        sid = await self._session(stale=sid)
        return await self._exchange(method, body, sid)

    async def _session(self, stale: str | None = None) -> str:
        async with self._login_lock:
            if self._sid is None or self._sid == stale:
                self._sid = None
                self._sid = await self.login()
            return self._sid

    async def login(self) -> str:
        """``auth.login`` → sid. Only in login mode."""
        settings = self.settings
        if not (settings.login and settings.password):
            raise ConfigError("planfix: login mode needs login and password")
        root = await self._exchange(
            "auth.login", [("login", settings.login), ("password", settings.password)], None
        )
        sid = text_of(root, "sid")
        if not sid:
            raise BadResponseError("auth.login answered without a sid", method="auth.login")
        return sid

    # --- tasks -------------------------------------------------------------------

    async def get_task(self, task_id: int) -> Task:
        root = await self.call("task.get", [("task", [("id", task_id)])])
        return self._one_card(root, "task.get", task_id=task_id)

    async def get_task_by_number(self, general: int) -> Task:
        """The task people call "#general" (its number in links), not its id."""
        root = await self.call("task.get", [("task", [("general", general)])])
        task = self._one_card(root, "task.get", task_id=None)
        if task.general not in (None, general):
            raise BadResponseError(f"asked for task number {general}, got {task.general}")
        return task

    def _one_card(self, root: etree._Element, method: str, task_id: int | None) -> Task:
        card = root.find("task")
        if card is None:
            raise BadResponseError("no <task> in the answer", method=method)
        try:
            return parse_task(card, self.tz, task_id=task_id)
        except BadResponseError as exc:
            exc.method = method
            raise

    async def get_tasks(self, task_ids: Iterable[int]) -> dict[int, TaskResult]:
        """Each id → its Task, or the error that concerns it.

        Uses ``task.getMulti`` in batches of up to 100 where the server has it,
        falling back to ``task.get`` (and remembering so) where it does not.
        An id missing from a batch answer is asked again with ``task.get``, so
        that only PlanFix's own word (3001/3008) ever says a task is gone.
        """
        ids = list(dict.fromkeys(task_ids))
        results: dict[int, TaskResult] = {}
        if len(ids) > 1 and self.multi_supported is not False:
            await self._fill_from_multi(ids, results)
        for task_id in ids:
            if task_id in results:
                continue
            try:
                results[task_id] = await self.get_task(task_id)
            except PlanfixError as exc:
                results[task_id] = exc
                if _stops_everything(exc):
                    _fail_all(results, ids, exc)
                    break
        return {task_id: results[task_id] for task_id in ids}

    async def _fill_from_multi(self, ids: list[int], results: dict[int, TaskResult]) -> None:
        pending = deque(ids[i : i + MAX_BATCH] for i in range(0, len(ids), MAX_BATCH))
        while pending:
            batch = pending.popleft()
            try:
                results.update(await self._get_multi(batch))
                self.multi_supported = True
            except PlanfixApiError as exc:
                if exc.code in UNSUPPORTED_CODES:
                    self.multi_supported = False  # the rest go one by one
                    return
                if exc.code == "0021" and len(batch) > 1:
                    half = len(batch) // 2
                    pending.extendleft([batch[half:], batch[:half]])
                    continue
                _fail_all(results, batch, exc)
                if _stops_everything(exc):
                    _fail_all(results, ids, exc)
                    return
            except PlanfixError as exc:
                _fail_all(results, batch, exc)

    async def _get_multi(self, batch: Sequence[int]) -> dict[int, TaskResult]:
        root = await self.call("task.getMulti", [("tasks", [("id", task_id) for task_id in batch])])
        container = root.find("tasks")
        if container is None:
            raise BadResponseError("no <tasks> in the answer", method="task.getMulti")
        wanted = set(batch)
        found: dict[int, TaskResult] = {}
        for card in container.iterfind("task"):
            try:  # each card on its own: one PlanFix got wrong fails only its task
                task = parse_task(card, self.tz)
            except BadResponseError:
                # Left out: get_tasks asks for it alone with task.get, whose
                # error names the task and the field.
                continue
            if task.id in wanted:
                found[task.id] = task
        return found

    async def list_tasks(self, query: TaskQuery, page: int = 1) -> TaskPage:
        """One page (up to 100 cards) of ``task.getList``; page 0 counts only."""
        root = await self.call("task.getList", query.body(self.tz, page))
        container = root.find("tasks")
        if container is None:
            raise BadResponseError("no <tasks> in the answer", method="task.getList")
        return parse_task_page(container, self.tz)

    async def list_actions(
        self, since: datetime, until: datetime, page: int = 1
    ) -> tuple[list[Action], int]:
        """One page (up to 100, oldest first) of the account's action log in
        [since, until], minute precision; and how many there are in all."""
        body = actions_body(since, until, self.tz, page)
        root = await self.call("action.getListByPeriod", body)
        container = root.find("actions")
        if container is None:
            raise BadResponseError("no <actions> in the answer", method="action.getListByPeriod")
        return parse_actions(container, self.tz)

    # --- statuses ---------------------------------------------------------------

    async def status_sets(self) -> list[StatusSet]:
        root = await self.call("taskStatus.getSetList")
        container = root.find("taskStatusSets")
        if container is None:
            raise BadResponseError("no <taskStatusSets>", method="taskStatus.getSetList")
        return [
            StatusSet(_required_int(item, "id", "taskStatusSet"), text_of(item, "name") or "")
            for item in container.iterfind("taskStatusSet")
        ]

    async def statuses_of_set(self, set_id: int) -> list[TaskStatus]:
        root = await self.call("taskStatus.getListOfSet", [("taskStatusSet", [("id", set_id)])])
        container = root.find("taskStatuses")
        if container is None:
            raise BadResponseError("no <taskStatuses>", method="taskStatus.getListOfSet")
        return [
            TaskStatus(
                id=_required_int(item, "id", "taskStatus"),
                name=text_of(item, "name") or "",
                is_active=text_of(item, "isActive") != "0",
                has_deadline=text_of(item, "hasDeadline") != "0",
            )
            for item in container.iterfind("taskStatus")
        ]

    async def status_catalog(self, *, now: float | None = None) -> StatusCatalog:
        """Status names by process, cached for ``status_cache_s``. A server
        without the methods gives an empty catalog (names fall back to numbers)."""
        clock = time.monotonic() if now is None else now
        if self._catalog is not None and clock - self._catalog_at < self.settings.status_cache_s:
            return self._catalog
        try:
            sets = await self.status_sets()
            statuses = {s.id: await self.statuses_of_set(s.id) for s in sets}
            catalog = StatusCatalog.build(sets, statuses)
        except PlanfixApiError as exc:
            if exc.code not in UNSUPPORTED_CODES:
                raise
            catalog = StatusCatalog.empty()
        self._catalog, self._catalog_at = catalog, clock
        return catalog


def _fail_all(results: dict[int, TaskResult], ids: Iterable[int], exc: PlanfixError) -> None:
    """Give ``exc`` to every id that has no answer yet."""
    for task_id in ids:
        results.setdefault(task_id, exc)


def _stops_everything(exc: PlanfixError) -> bool:
    """After these, asking about the next task would only waste requests."""
    return exc.error_class in (ErrorClass.QUOTA, ErrorClass.FATAL_CONFIG)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    seconds = _int_header(headers, "Retry-After")
    return float(seconds) if seconds is not None and seconds >= 0 else None


def _int_attr(element: etree._Element, name: str, *, default: int) -> int:
    try:
        return int(element.get(name, default))
    except ValueError:
        return default


def _required_int(item: etree._Element, path: str, what: str) -> int:
    raw = text_of(item, path)
    try:
        return int(raw or "")
    except ValueError:
        raise BadResponseError(f"{what} without a numeric id: {raw!r}") from None
