"""The emulator pushes as PlanFix's scenario operation "Послать HTTP-запрос"
does: on each change of a task, a request to ``push_url`` with the body
template filled in (``{{Задача.Номер}}``, ``{{Задача.Название}}``,
``{{Задача.Статус}}``) and the custom header; one sending thread per
account; after an error or a non-200 answer, retries on ``push_retry_s``
(PlanFix's Russian help: +15 min, +30 min, +1 h, +1 h), then gives up.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

import httpx

from ..planfix.client import is_loopback
from .state import Account

TEMPLATE_FIELDS = {"Номер": "general", "Название": "title", "Статус": "status"}


def render(template: str, task: dict[str, Any]) -> str:
    for name, key in TEMPLATE_FIELDS.items():
        template = template.replace(f"{{{{Задача.{name}}}}}", str(task.get(key, "")))
    return template


class Pusher:
    """One thread, one request at a time, in the order the changes came."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self._queue: list[tuple[float, int, int, int, str]] = []  # due, seq, task, attempt, body
        self._seq = itertools.count()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="emulator-push", daemon=True)
        account.on_change = self.changed
        self._thread.start()

    def changed(self, task: dict[str, Any]) -> None:
        """Called under the account's lock: only queues."""
        settings = self.account.settings
        if not settings.push_url or not is_loopback(httpx.URL(settings.push_url).host):
            return  # (an emulator reaches nothing beyond this machine)
        body = render(settings.push_body, task)
        self._put(time.monotonic(), int(task["id"]), 0, body)

    def _put(self, due: float, task_id: int, attempt: int, body: str) -> None:
        with self._wake:
            heapq.heappush(self._queue, (due, next(self._seq), task_id, attempt, body))
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as http:
            while True:
                with self._wake:
                    while not self._stopped and (
                        not self._queue or self._queue[0][0] > time.monotonic()
                    ):
                        wait = self._queue[0][0] - time.monotonic() if self._queue else None
                        self._wake.wait(wait)
                    if self._stopped:
                        return
                    _, _, task_id, attempt, body = heapq.heappop(self._queue)
                self._send(http, task_id, attempt, body)

    def _send(self, http: httpx.Client, task_id: int, attempt: int, body: str) -> None:
        settings = self.account.settings
        headers = {"Content-Type": settings.push_content_type}
        if settings.push_secret:
            headers[settings.push_header] = settings.push_secret
        entry: dict[str, Any] = {"task": task_id, "attempt": attempt, "at": time.time()}
        try:
            status = http.post(settings.push_url, content=body.encode(), headers=headers)
            entry["status"] = status.status_code
            failed = status.status_code != 200
        except httpx.HTTPError as exc:
            entry["error"] = type(exc).__name__
            failed = True
        self.account.push_log.append(entry)
        self.account.pushes_made += 1
        if failed and attempt < len(settings.push_retry_s):
            due = time.monotonic() + settings.push_retry_s[attempt]
            self._put(due, task_id, attempt + 1, body)
