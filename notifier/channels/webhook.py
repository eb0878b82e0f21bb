"""Alerts as a JSON POST, optionally signed with HMAC-SHA256.

Body (version 1)::

    {"version": 1, "text": "…plain text of the message…",
     "events": [{"kind": "status_changed", "at": "2026-11-23T09:00:00+00:00",
                 "account": "acme", "task_id": 1001,
                 "url": "https://acme.planfix.ru/task/418",
                 "old": "В работе", "new": "Завершённая", "details": {…},
                 "task": {"id": 1001, "general": 418, "title": "…", "status": 3,
                          "status_name": "Завершённая", "importance": "HIGH",
                          "project": "…", "workers": ["…"], "deadline": "…"}}]}

With ``secret`` set, header ``X-Planfix-Notifier-Signature: sha256=<hex>`` is
the HMAC-SHA256 of the raw body under the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from ..alerts.events import Event
from ..ops.errors import described
from ..planfix.client import private_transport
from .base import (
    Channel,
    ChannelOptions,
    CheckResult,
    Delivered,
    FailedForGood,
    Message,
    Misconfigured,
    RetryLater,
    SendResult,
)

SIGNATURE_HEADER = "X-Planfix-Notifier-Signature"


class WebhookOptions(ChannelOptions):
    type: Literal["webhook"] = "webhook"
    url: str
    secret: SecretStr | None = None
    timeout_s: float = 10.0
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if private_transport(value):
            return value
        raise ValueError("a webhook URL must be https:// (http:// only to a loopback host)")


def event_json(event: Event, url: str | None) -> dict[str, Any]:
    def plain(value: object) -> object:
        return value.isoformat() if isinstance(value, datetime) else value

    task = {k: plain(v) for k, v in asdict(event.task).items()} if event.task else None
    return {
        "kind": event.kind.value,
        "at": event.at.isoformat(),
        "account": event.account,  # (its name: [accounts.NAME]'s, or planfix.account)
        "task_id": event.task_id,
        "url": url,
        "old": event.old,
        "new": event.new,
        "details": event.details,
        "task": task,
    }


class WebhookChannel(Channel):
    Options = WebhookOptions
    max_length = 1_000_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.options, WebhookOptions)
        self.opts: WebhookOptions = self.options
        self._http = httpx.AsyncClient(timeout=self.opts.timeout_s, follow_redirects=False)

    def recipients(self) -> list[str]:
        return [self.opts.url]

    def body(self, message: Message) -> bytes:
        payload = {
            "version": 1,
            "text": self.renderer.text(message.events),
            "events": [
                event_json(e, self.renderer.url(e.task, e.account) if e.task else None)
                for e in message.events
            ],
        }
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def send(self, message: Message) -> SendResult:
        body = self.body(message)
        headers = {"Content-Type": "application/json; charset=utf-8", **self.opts.headers}
        if self.opts.secret is not None:
            key = self.opts.secret.get_secret_value().encode()
            digest = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        try:
            response = await self._http.post(self.opts.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return RetryLater(f"webhook unreachable: {type(exc).__name__}")
        status = response.status_code
        if 200 <= status < 300:
            return Delivered(f"HTTP {status}")
        if status == 429 or status >= 500:
            retry = response.headers.get("Retry-After", "")
            return RetryLater(f"HTTP {status}", float(retry) if retry.isdigit() else None)
        if status in (401, 403):
            return Misconfigured(
                f"the webhook refuses us: HTTP {status}; a configuration error: check "
                f"channels.{self.name}.headers and secret"
            )
        return FailedForGood(f"the webhook refused the message: HTTP {status}")

    async def check(self) -> CheckResult:
        try:
            response = await self._http.request("HEAD", self.opts.url)
        except httpx.HTTPError as exc:
            return CheckResult(False, f"{self._host()} unreachable: {described(exc)}")
        return CheckResult(
            response.status_code < 500, f"{self._host()}: HTTP {response.status_code} to HEAD"
        )

    def _host(self) -> str:
        return httpx.URL(self.opts.url).netloc.decode()  # no path: it may carry a secret

    async def aclose(self) -> None:
        await self._http.aclose()
