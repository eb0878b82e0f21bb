"""Hostile task text, end to end: PlanFix (the emulator) serves a task whose
title and description carry HTML, Markdown, CR/LF, 100 KB, RTL overrides,
emoji or XML look-alikes; the service alerts a status change to Telegram,
e-mail and a webhook. Each must take the message (the fake Bot API checks
Telegram's HTML rules and length), show the title as text and never as markup,
and keep headers and recipients intact."""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import re
from collections.abc import Awaitable, Callable

import pytest

from notifier.alerts.render import one_line
from notifier.app import Service
from notifier.channels.webhook import SIGNATURE_HEADER
from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.smtp import SmtpServer
from tests.fakes.telegram import TelegramServer
from tests.fakes.webhook import WebhookServer
from tests.test_delivery import CHAT, until

HOOK_SECRET = "hook-secret-value"
TITLES = {
    "html": '<script>alert(1)</script> <b>жирный <a href="javascript:steal()">ссылка</a> & &amp; &lt;',
    "markdown": "*жирный* _курсив_ `код` [ссылка](https://evil.example) ~~зачёркнуто~~ ||спойлер||",
    "crlf": "Отчёт\r\nBcc: victim@example.com\r\nSubject: поддельная\r\n\r\n<html>тело",
    "100kb": "Очень длинная задача " + "слово " * 17_000,
    "rtl": "\u202eexe.доклад\u202c שלום עולם مرحبا بالعالم \u2067изолят",
    "emoji": "👨‍👩‍👧‍👦 🏳️‍🌈 🇷🇺 ✅ ❌ 🔥 😀" * 5,
    "xml": ']]><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>&e; <![CDATA[x]]>',
}
DESCRIPTION = "\n".join([*TITLES.values(), "описание " * 10_000])
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def visible(markup: str) -> str:
    """What a reader sees of an HTML message: tags gone, entities decoded."""
    return one_line(html.unescape(re.sub(r"<[^>]*>", " ", markup)))


@pytest.mark.parametrize("case", list(TITLES))
async def test_hostile_text_is_shown_as_text_everywhere(
    case: str,
    running: Callable[..., Awaitable[Service]],
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    webhook: WebhookServer,
) -> None:
    title = TITLES[case]
    task = control.create_task(title=title, description=DESCRIPTION, status=1)
    hook = {"type": "webhook", "url": webhook.url, "secret": HOOK_SECRET}
    service = await running([task["id"]], mail=smtp_plain.options(), hook=hook)
    await until(lambda: service.poller.records[task["id"]].card is not None)
    control.change_task(task["id"], status=2)
    await until(
        lambda: (
            bool(telegram.fake.texts(CHAT))
            and bool(smtp_plain.inbox.messages)
            and bool(webhook.receiver.received)
        )
    )
    shown = one_line(BIDI_CONTROLS.sub("", title))[:60]  # the start of what a reader sees

    # Telegram took it as valid HTML, the title as text, the only link the task's
    assert telegram.fake.rejected == []
    sent = "".join(telegram.fake.texts(CHAT))
    assert shown in visible(sent)
    link = (
        f'<a href="https://{emulator.account.settings.account}.planfix.ru/task/{task["general"]}">'
    )
    assert re.findall(r"<a [^>]*>", sent) == [link]
    assert "<script" not in sent and not BIDI_CONTROLS.search(sent)

    # e-mail: one recipient, no injected header, the title escaped in HTML
    (mail,) = smtp_plain.inbox.messages
    assert smtp_plain.inbox.envelopes == [("planfix@example.com", ["pm@example.com"])]
    assert mail["Bcc"] is None and "\n" not in str(mail["Subject"])
    assert mail["Subject"].startswith("PlanFix #")
    body = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert body is not None and text is not None
    assert "<script" not in body.get_content() and shown in visible(body.get_content())
    assert shown in one_line(text.get_content())

    # webhook: signed JSON carrying the title as PlanFix gave it
    (received,) = webhook.receiver.received
    signature = hmac.new(HOOK_SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers[SIGNATURE_HEADER] == f"sha256={signature}"
    (item,) = json.loads(received.body)["events"]
    assert item["task"]["title"] == title.strip()

    # the description is never part of an alert
    everything = sent + mail.as_string() + received.body.decode()
    assert "описание описание" not in everything
