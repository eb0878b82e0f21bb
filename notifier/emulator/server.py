"""The emulator's HTTP server: the XML API at ``/xml/`` and a JSON control API
at ``/control/…`` (tasks, clock, faults, settings). Loopback only.

Control API (JSON bodies and answers):
  GET    /control/state                  clock, quota, request counts, faults
  GET    /control/tasks                  every task record
  POST   /control/tasks                  create a task (PlanFix field names)
  GET    /control/tasks/ID               one task record
  PATCH  /control/tasks/ID               change fields (null removes one; "silent": true
                                         leaves no action and no new last-change date)
  DELETE /control/tasks/ID               delete (task.get then answers 3001)
  POST   /control/clock                  {"advance_s": N} or {"set": ISO, "freeze": bool}
  POST   /control/faults                 queue a fault (see state.FAULT_KINDS)
  DELETE /control/faults                 clear every fault
  POST   /control/sessions/expire        every sid answers 0005 from now on
  POST   /control/settings               change settings (quota, shape, …)
  POST   /control/quota                  {"used": N} set today's count
  POST   /control/filters                a saved task filter: {"id": N, "project": ID,
                                         "status": [IDS], "worker": ID, "tasks": [IDS]}
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..planfix.client import is_loopback
from .push import Pusher
from .state import Account, ControlError, Fault, Settings
from .xml_api import XmlApi

MAX_REQUEST_BYTES = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect of PlanFix
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # answer would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests and the demo print what matters themselves

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise ControlError("request too large")
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str],
        trickle_s: float = 0.0,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not trickle_s:
            self.wfile.write(body)
            return
        for byte in body:  # a server that answers, but one byte at a time
            try:
                self.wfile.write(bytes((byte,)))
                self.wfile.flush()
            except OSError:
                return  # the client gave up
            time.sleep(trickle_s)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, ensure_ascii=False).encode()
        self._send(status, body, "application/json; charset=utf-8", {})

    def do_POST(self) -> None:
        if self.path.rstrip("/") == "/xml":
            self._xml()
        else:
            self._control("POST")

    def do_GET(self) -> None:
        self._control("GET")

    def do_PATCH(self) -> None:
        self._control("PATCH")

    def do_DELETE(self) -> None:
        self._control("DELETE")

    def _xml(self) -> None:
        body = self._body()
        answer = self.server.api.handle(self.headers.get("Authorization"), body)
        if answer.delay_s:
            time.sleep(answer.delay_s)
        if answer.reset:
            self.close_connection = True
            self.connection.close()
            return
        self._send(
            answer.status, answer.body, answer.content_type, answer.headers, answer.trickle_s
        )

    def _control(self, verb: str) -> None:
        try:
            raw = self._body()
            data = json.loads(raw) if raw else {}
            with self.server.account.lock:
                status, result = control(self.server.account, verb, self.path, data)
        except (ControlError, ValueError, TypeError, KeyError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(status, result)


def control(account: Account, verb: str, path: str, data: Any) -> tuple[int, Any]:
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts or parts[0] != "control":
        return HTTPStatus.NOT_FOUND, {"error": f"no such path {path}"}
    route = (verb, *parts[1:2])
    if route == ("GET", "state"):
        return 200, account.snapshot()
    if parts[1:2] == ["tasks"]:
        return _tasks(account, verb, parts[2:], data)
    if route == ("POST", "clock"):
        if "advance_s" in data:
            account.clock.advance(float(data["advance_s"]))
        elif "set" in data:
            account.clock.set(datetime.fromisoformat(data["set"]), freeze=bool(data.get("freeze")))
        else:
            raise ControlError('clock takes {"advance_s": N} or {"set": ISO, "freeze": bool}')
        return 200, {"now": account.now().isoformat()}
    if route == ("POST", "faults"):
        account.faults.append(Fault.from_json(data))
        return 201, {"queued": len(account.faults)}
    if route == ("DELETE", "faults"):
        account.faults.clear()
        return 200, {"queued": 0}
    if parts[1:] == ["sessions", "expire"] and verb == "POST":
        account.sessions.clear()
        return 200, {"sessions": 0}
    if route == ("POST", "settings"):
        account.settings.update(data)
        return 200, account.snapshot()["settings"]
    if route == ("POST", "quota"):
        account.set_quota_used(int(data["used"]))
        return 200, account.snapshot()["quota"]
    if route == ("POST", "filters"):
        conditions = dict(data)
        return 201, account.save_filter(int(conditions.pop("id")), conditions)
    return HTTPStatus.NOT_FOUND, {"error": f"no such control call: {verb} {path}"}


def _tasks(account: Account, verb: str, rest: list[str], data: Any) -> tuple[int, Any]:
    if not rest:
        if verb == "GET":
            return 200, list(account.tasks.values())
        if verb == "POST":
            return 201, account.add_task(dict(data))
        raise ControlError(f"{verb} /control/tasks is not a call")
    task_id = int(rest[0])
    if verb == "GET":
        return 200, account.task(task_id)
    if verb == "PATCH":
        changes = dict(data)
        silent = bool(changes.pop("silent", False))
        return 200, account.change_task(task_id, changes, silent=silent)
    if verb == "DELETE":
        account.task(task_id)
        del account.tasks[task_id]
        return 200, {"deleted": task_id}
    raise ControlError(f"{verb} /control/tasks/ID is not a call")


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, account: Account, host: str = "127.0.0.1", port: int = 0) -> None:
        if not is_loopback(host):
            raise ValueError(f"the emulator listens on loopback only, not {host!r}")
        self.account = account
        self.api = XmlApi(account)
        super().__init__((host, port), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hangs up mid-answer (it refused a 10 MB body, say) is
        # expected here; anything else is still reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Emulator:
    """An emulator on a loopback port, served from a background thread."""

    def __init__(self, account: Account | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.account = account or Account(Settings())
        self.server = EmulatorServer(self.account, host, port)
        self._thread: threading.Thread | None = None
        self._pusher: Pusher | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/xml/"

    def start(self) -> Emulator:
        self._pusher = Pusher(self.account)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="planfix-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.stop()
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
