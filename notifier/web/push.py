"""The push endpoint: PlanFix's scenarios send an HTTP request here when a
task changes ("Послать HTTP-запрос").

It faces PlanFix's cloud, so it is a listener of its own, apart from
/metrics. It checks the shared secret header in constant time, caps the
body, limits each source address, and reads the task from a JSON body
(``{"number": 418}``), a form body (``number=418``) or the query string
(``?number=418``), by ``task`` (its id) or ``number`` (the one people see).
It answers 200 at once and hands the task to the inbox: the read that
verifies the push comes after, so PlanFix neither waits nor retries.
"""

from __future__ import annotations

import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from aiohttp import web

from ..ops import logging as oplog
from ..watch.push import PushInbox
from .server import HttpServer, Routes

if TYPE_CHECKING:
    from ..config import PushSection

log = oplog.get(__name__)

MAX_BODY = 64 * 1024
KEYS = ("task", "number")
FORGED_LOG_EVERY_S = 60.0
MAX_SOURCES = 1024  # source addresses remembered by the rate limit


class PushFormatError(ValueError):
    """A push we cannot read; its text is the one-line reason."""


@dataclass(frozen=True, slots=True)
class PushSettings:
    path: str
    secret: str
    header: str
    source_rate_per_s: float
    source_burst: int


def parse_push(query: Mapping[str, str], content_type: str, body: bytes) -> dict[str, int]:
    """``{"task_id": …}`` or ``{"number": …}`` from the body or the query string."""
    try:
        return _parse(query, content_type, body)
    except PushFormatError:
        raise
    except (ValueError, RecursionError) as exc:  # too many fields, digits, nesting, …
        raise PushFormatError(f"unreadable ({type(exc).__name__})") from None


def _parse(query: Mapping[str, str], content_type: str, body: bytes) -> dict[str, int]:
    fields: dict[str, object] = {k: query[k] for k in KEYS if k in query}
    text = body.strip()
    if text:
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            raise PushFormatError("the body is not UTF-8 text") from None
        if content_type == "application/json" or decoded[0] in "{[":
            try:
                data = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise PushFormatError(f"the body is not JSON ({exc.msg})") from None
            if not isinstance(data, dict):
                raise PushFormatError("the JSON body is not an object")
        else:
            data = {k: v[-1] for k, v in parse_qs(decoded, max_num_fields=50).items()}
        fields.update({k: data[k] for k in KEYS if k in data})
    if not fields:
        raise PushFormatError("no task: send task=<id> or number=<number>")
    key = "task" if "task" in fields else "number"
    value = fields[key]
    digits = value.strip().lstrip("#") if isinstance(value, str) else ""
    if digits.isascii() and digits.isdecimal() and len(digits) <= 16:
        value = int(digits)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**53:
        what = "an id" if key == "task" else "a number"
        raise PushFormatError(f"{key}: {str(value)[:40]!r} is not {what} of a task")
    return {"task_id": value} if key == "task" else {"number": value}


class SourceLimits:
    """A token bucket per source address: ``burst`` at once, then ``rate_per_s``."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate_per_s, self.burst, self.clock = rate_per_s, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, source: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.pop(source, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return allowed


class _Forged:
    """Pushes without the right secret: logged at most once a minute."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.logged_at = -FORGED_LOG_EVERY_S
        self.unlogged = 0

    def seen(self, source: str, header: str) -> None:
        self.unlogged += 1
        if self.clock() - self.logged_at < FORGED_LOG_EVERY_S:
            return
        log.warning(f"push refused: wrong or missing {header}", source=source,
                    refused=self.unlogged)  # fmt: skip
        self.logged_at, self.unlogged = self.clock(), 0


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The whole body (it may come in pieces, or chunked), None once over MAX_BODY."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(MAX_BODY + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            return None
    return b"".join(chunks)


def push_routes(
    settings: PushSettings,
    inboxes: Mapping[str, PushInbox],
    *,
    on_result: Callable[[str], None] = lambda result: None,
    clock: Callable[[], float] = time.monotonic,
) -> Routes:
    """``inboxes``: each path's (one per account, where there are several);
    ``on_result`` hears each push's result (for the metrics)."""
    limits = SourceLimits(settings.source_rate_per_s, settings.source_burst, clock)
    forged = _Forged(clock)
    secret = settings.secret.encode()
    too_large = f"body over {MAX_BODY // 1024} KB\n"

    def answer(result: str, status: int, text: str, retry_after_s: int = 0) -> web.Response:
        on_result(result)
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
        return web.Response(status=status, text=text, headers=headers)

    async def receive(request: web.BaseRequest) -> web.Response:
        inbox = inboxes[request.path]
        source = request.remote or "?"
        # (aiohttp keeps undecodable header bytes as surrogates: back to bytes)
        given = request.headers.get(settings.header, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, secret):
            forged.seen(source, settings.header)
            return answer("refused", 401, f"unauthorized: wrong or missing {settings.header}\n")
        if not limits.allow(source):
            return answer("limited", 429, "too many pushes from this address\n", retry_after_s=1)
        if (request.content_length or 0) > MAX_BODY:
            return answer("too_large", 413, too_large)
        body = await _read_body(request)
        if body is None:
            return answer("too_large", 413, too_large)
        try:
            task = parse_push(request.query, request.content_type, body)
        except PushFormatError as exc:
            return answer("bad", 400, f"bad push: {exc}\n")
        if not inbox.offer(**task):
            return answer("dropped", 503, "too many pushes waiting\n", retry_after_s=60)
        return answer("accepted", 200, "ok\n")

    return {(method, path): receive for path in inboxes for method in ("POST", "GET")}


async def serve_push(
    section: PushSection,
    inboxes: PushInbox | Mapping[str, PushInbox],
    on_result: Callable[[str], None],
) -> HttpServer:
    """Listen at ``section.listen`` (OSError when the address cannot be had):
    at ``section.path`` for one inbox, or at each path of ``inboxes``."""
    if isinstance(inboxes, PushInbox):
        inboxes = {section.path: inboxes}
    assert section.secret is not None  # the config refuses a listener without one
    settings = PushSettings(
        section.path, section.secret.get_secret_value(), section.header,
        section.source_rate_per_s, section.source_burst,
    )  # fmt: skip
    server = HttpServer(section.listen, push_routes(settings, inboxes, on_result=on_result))
    await server.start()
    return server
