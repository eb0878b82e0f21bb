"""The webhook channel against a local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from pydantic import ValidationError

from notifier.channels.base import Delivered, FailedForGood, Message, RetryLater
from notifier.channels.webhook import SIGNATURE_HEADER, WebhookOptions
from tests.alerts.samples import channel, event, summary
from tests.fakes.webhook import WebhookServer


async def test_posts_the_documented_json_signed(webhook: WebhookServer) -> None:
    hook = channel("hook", {"type": "webhook", "url": webhook.url, "secret": "s3cret"})
    title = 'Отчёт <b>"x"</b>\nвторая строка'
    result = await hook.send(Message("hook", webhook.url, (event(task=summary(title=title)),)))
    assert isinstance(result, Delivered)
    (received,) = webhook.receiver.received
    expected = hmac.new(b"s3cret", received.body, hashlib.sha256).hexdigest()
    assert received.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    body = json.loads(received.body)
    assert body["version"] == 1
    (item,) = body["events"]
    assert item["kind"] == "status_changed" and item["task"]["title"] == title
    assert item["url"] == "https://acme.planfix.ru/task/401"
    assert (item["old"], item["new"]) == ("В работе", "Завершённая")
    assert "Статус: В работе → Завершённая" in body["text"]


@pytest.mark.parametrize(
    ("status", "outcome"), [(500, RetryLater), (429, RetryLater), (404, FailedForGood)]
)
async def test_answers_decide_the_outcome(
    webhook: WebhookServer, status: int, outcome: type
) -> None:
    webhook.receiver.status = status
    hook = channel("hook", {"type": "webhook", "url": webhook.url})
    assert isinstance(await hook.send(Message("hook", webhook.url, (event(),))), outcome)


async def test_unreachable_is_retried() -> None:
    hook = channel("hook", {"type": "webhook", "url": "http://127.0.0.1:9/hook"})
    assert isinstance(await hook.send(Message("hook", "x", (event(),))), RetryLater)


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ValidationError, match="https"):
        WebhookOptions(type="webhook", url="http://hooks.example.com/x")
    WebhookOptions(type="webhook", url="https://hooks.example.com/x")
