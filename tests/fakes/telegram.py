"""A fake Telegram Bot API server on a loopback port.

Answers ``/bot<token>/<method>`` as Telegram does (form-encoded or JSON
requests, ``{"ok": …}`` answers): getMe, sendMessage (with Telegram's own
checks: 4096 characters, well-formed HTML of the allowed tags and entities),
getUpdates, answerCallbackQuery, editMessageReplyMarkup, setMyCommands,
deleteWebhook. Faults are queued per chat (429 with retry_after, 403, 400,
5xx, slowness, a late arrival, a migration), and with ``enforce_limits`` it answers 429 to a
client that sends more than 1 message/s to a chat, 20/min to a group or
30/s overall.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "span", "tg-spoiler", "blockquote", "tg-emoji",
}  # fmt: skip
NAMED_ENTITIES = {"lt", "gt", "amp", "quot"}
TOLERANCE = 0.05  # seconds of clock slack a real network would add


class BadHtml(ValueError):
    pass


_MARKUP = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)[^<>]*>|&(#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|[<&]")


def check_html(text: str) -> None:
    """Raise BadHtml where Telegram would: a stray < or &, an unknown tag or
    entity, tags that do not nest."""
    stack: list[str] = []
    for match in _MARKUP.finditer(text):
        closing, tag, entity = match.group(1), match.group(2), match.group(3)
        if tag:
            tag = tag.lower()
            if tag not in ALLOWED_TAGS:
                raise BadHtml(f'can\'t parse entities: unsupported start tag "{tag}"')
            if not closing:
                stack.append(tag)
            elif not stack or stack.pop() != tag:
                raise BadHtml(f'can\'t parse entities: unexpected end tag "{tag}"')
        elif entity:
            if not entity.startswith("#") and entity not in NAMED_ENTITIES:
                raise BadHtml(f'can\'t parse entities: unsupported entity "&{entity};"')
        else:
            raise BadHtml(f"can't parse entities: unescaped {match.group(0)!r}")
    if stack:
        raise BadHtml(f"can't parse entities: can't find end tag corresponding to \"{stack[-1]}\"")


@dataclass
class Fault:
    kind: str  # retry_after | forbidden | bad_request | server_error | slow | migrate
    chat_id: str | None = None  # None: any chat
    times: int = 1  # -1: until cleared
    after: int = 0  # let this many matching messages through first
    retry_after: int = 1
    delay_s: float = 0.0
    migrate_to: int = 0


@dataclass
class Sent:
    chat_id: str
    text: str
    parse_mode: str | None
    reply_markup: Any
    at: float


@dataclass
class FakeTelegram:
    token: str = "123456:TEST-token-abcdefghijklmnopqrstuvwxyz"
    enforce_limits: bool = False
    sent: list[Sent] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (HTTP status, description)
    faults: list[Fault] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _times: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)
    _next_id: int = 1
    down: bool = False  # set while the server is "down" (see TelegramServer.restarted)
    unknown_chats: set[str] = field(default_factory=set)  # getChat: "chat not found"

    def texts(self, chat_id: object) -> list[str]:
        return [s.text for s in self.sent if s.chat_id == str(chat_id)]

    def inject(self, kind: str, chat_id: object = None, **options: Any) -> None:
        with self.lock:
            self.faults.append(Fault(kind, None if chat_id is None else str(chat_id), **options))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def push(self, update: dict[str, Any]) -> None:
        with self.lock:
            update["update_id"] = len(self.updates) + 1
            self.updates.append(update)

    def say(self, chat_id: int, user_id: int, text: str) -> None:
        """Someone writes in a chat (a /command carries its entity, as Telegram sends it)."""
        message: dict[str, Any] = {**_message(chat_id, user_id), "text": text}
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        self.push({"message": message})

    def press(self, chat_id: int, user_id: int, data: str) -> None:
        """Someone presses a button under one of the bot's messages."""
        query = {
            "id": str(len(self.updates) + 1),
            "from": _user(user_id),
            "chat_instance": "1",
            "data": data,
            "message": {**_message(chat_id, 42), "text": "alert"},
        }
        self.push({"callback_query": query})

    def count_429(self) -> int:
        return sum(1 for status, _ in self.rejected if status == 429)

    # --- answering ------------------------------------------------------------------

    def _fault(self, chat: str | None) -> Fault | None:
        for fault in self.faults:
            if fault.times != 0 and (fault.chat_id is None or fault.chat_id == chat):
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.times > 0:
                    fault.times -= 1
                return fault
        return None

    def _over_limit(self, chat: str, now: float) -> float | None:
        """Seconds to wait if this message would break a flood limit."""
        window = self._times.setdefault(chat, deque())
        while window and window[0] < now - 60:
            window.popleft()
        while self._all and self._all[0] < now - 1:
            self._all.popleft()
        if window and now - window[-1] < 1 - TOLERANCE:
            return 1
        group = chat.startswith(("-", "@"))
        if group and len(window) >= 20 and now - window[-20] < 60 - TOLERANCE:
            return max(1, int(window[-20] + 60 - now + 1))
        if len(self._all) >= 30:
            return 1
        return None

    def answer(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """(HTTP status, body, delay before answering)."""
        with self.lock:
            self.calls.append(method)
            if method == "getMe":
                return (
                    200,
                    _ok(
                        {
                            "id": 42,
                            "is_bot": True,
                            "first_name": "PlanFix",
                            "username": "planfix_test_bot",
                        }
                    ),
                    0,
                )
            if method == "getUpdates":
                offset = int(params.get("offset") or 0)
                pending = [u for u in self.updates if u["update_id"] >= offset]
                return (
                    200,
                    _ok(pending),
                    0 if pending else min(float(params.get("timeout") or 0), 0.2),
                )
            if method in (
                "deleteWebhook",
                "setMyCommands",
                "answerCallbackQuery",
                "editMessageReplyMarkup",
            ):
                return 200, _ok(True), 0
            if method == "getChat":
                chat_id = str(params.get("chat_id"))
                if chat_id in self.unknown_chats:
                    return self._reject(400, "Bad Request: chat not found")
                fault = self._fault(chat_id)
                if fault is not None and fault.kind in ("forbidden", "bad_request"):
                    return self._faulty(fault)
                kind = "supergroup" if chat_id.startswith("-100") else "private"
                found = {"id": int(chat_id), "type": kind, "title": "Команда",
                         "accent_color_id": 0, "max_reaction_count": 11}  # fmt: skip
                return 200, _ok(found), 0
            if method != "sendMessage":
                return 404, _error(404, "Not Found: method not found"), 0
            chat = str(params.get("chat_id"))
            text = str(params.get("text", ""))
            fault = self._fault(chat)
            delay = late = 0.0
            if fault is not None:
                if fault.kind == "slow":
                    delay = fault.delay_s
                elif fault.kind == "late":  # held up on the way: it arrives, and counts, later
                    delay = late = fault.delay_s
                else:
                    return self._faulty(fault)
            now = time.monotonic() + late
            if self.enforce_limits:
                wait = self._over_limit(chat, now)
                if wait is not None:
                    return self._reject(
                        429, f"Too Many Requests: retry after {wait}", {"retry_after": wait}
                    )
            if len(text) > 4096:
                return self._reject(400, "Bad Request: message is too long")
            if params.get("parse_mode") == "HTML":
                try:
                    check_html(text)
                except BadHtml as exc:
                    return self._reject(400, f"Bad Request: {exc}")
            self._times.setdefault(chat, deque()).append(now)
            self._all.append(now)
            markup = params.get("reply_markup")
            self.sent.append(Sent(chat, text, params.get("parse_mode"), markup, time.time()))
            message_id, self._next_id = self._next_id, self._next_id + 1
            kind = (
                "supergroup"
                if chat.startswith("-100")
                else "group"
                if chat.startswith("-")
                else "private"
            )
            message = {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else 0, "type": kind},
                "text": text,
            }
            return 200, _ok(message), delay

    def _reject(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any], float]:
        self.rejected.append((status, description))
        return status, _error(status, description, parameters), 0

    def _faulty(self, fault: Fault) -> tuple[int, dict[str, Any], float]:
        if fault.kind == "retry_after":
            return self._reject(
                429,
                f"Too Many Requests: retry after {fault.retry_after}",
                {"retry_after": fault.retry_after},
            )
        if fault.kind == "forbidden":
            return self._reject(403, "Forbidden: bot was blocked by the user")
        if fault.kind == "bad_request":
            return self._reject(400, "Bad Request: chat not found")
        if fault.kind == "migrate":
            return self._reject(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": fault.migrate_to},
            )
        return self._reject(502, "Bad Gateway")


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "Тест"}


def _message(chat_id: int, user_id: int) -> dict[str, Any]:
    kind = "private" if chat_id > 0 else "supergroup"
    return {
        "message_id": 1000,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": kind},
        "from": _user(user_id),
    }


def _ok(result: object) -> dict[str, Any]:
    return {"ok": True, "result": result}


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _params(content_type: str, raw: bytes) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        return dict(json.loads(raw or b"{}"))
    parsed = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    for key in ("reply_markup",):  # complex values arrive as JSON strings
        if key in parsed:
            parsed[key] = json.loads(parsed[key])
    return parsed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: TelegramServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fake.down:  # a connection kept alive from before the outage: hang up on it
            self.close_connection = True
            return
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != f"bot{fake.token}":
            status, body, delay = 401, _error(401, "Unauthorized"), 0.0
        else:
            params = _params(self.headers.get("Content-Type", ""), raw)
            status, body, delay = fake.answer(parts[1], params)
        if delay:
            time.sleep(delay)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST


class TelegramServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: FakeTelegram, port: int = 0) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is fine
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> TelegramServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
        self.server_close()

    def restarted(self) -> TelegramServer:
        """The same fake listening again on the same port (after ``__exit__``)."""
        self.fake.down = False
        return TelegramServer(self.fake, self.server_address[1]).__enter__()
