"""The e-mail channel against aiosmtpd: plain, STARTTLS and implicit TLS."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from notifier.channels.base import Delivered, FailedForGood, Message, Misconfigured, RetryLater
from notifier.channels.email import EmailChannel, EmailOptions
from tests.alerts.samples import channel, event, summary
from tests.fakes.smtp import SmtpServer


def mailer(server: SmtpServer, **extra: Any) -> EmailChannel:
    made = channel("mail", server.options(**extra))
    assert isinstance(made, EmailChannel)
    return made


def message(*events: Any) -> Message:
    return Message("mail", "pm@example.com", tuple(events) or (event(),))


async def test_delivers_text_and_html_over_each_security(smtp: SmtpServer) -> None:
    result = await mailer(smtp).send(message())
    assert isinstance(result, Delivered), result
    (mail,) = smtp.inbox.messages
    assert mail["To"] == "pm@example.com" and mail["From"] == "planfix@example.com"
    assert (
        mail["Subject"]
        == "PlanFix #401 Подготовить отчёт по продажам: Статус: В работе → Завершённая"
    )
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert "Статус: В работе → Завершённая" in text.get_content()
    assert '<a href="https://acme.planfix.ru/task/401">#401</a>' in html.get_content()


async def test_one_tasks_alerts_thread_together(smtp_plain: SmtpServer) -> None:
    sender = mailer(smtp_plain)
    await sender.send(message(event()))
    await sender.send(message(event(old="Завершённая", new="В работе")))
    first, second = smtp_plain.inbox.messages
    assert first["Message-ID"] != second["Message-ID"]
    assert first["References"] == second["References"] == first["In-Reply-To"]
    assert first["References"] == "<planfix-acme-task-1001@example.com>"


async def test_the_same_task_id_of_two_accounts_is_two_threads(smtp_plain: SmtpServer) -> None:
    sender = mailer(smtp_plain)
    sender.renderer.accounts = {"acme": "acme", "client2": "client2"}  # several accounts
    for account in ("acme", "client2"):
        await sender.send(message(replace(event(), account=account)))
    first, second = smtp_plain.inbox.messages
    assert first["References"] == "<planfix-acme-task-1001@example.com>"
    assert second["References"] == "<planfix-client2-task-1001@example.com>"
    assert second["Subject"].startswith("PlanFix client2 #401 ")
    html = second.get_body(("html",))
    assert html is not None and "client2.planfix.ru/task/401" in html.get_content()


async def test_a_title_cannot_inject_headers(smtp_plain: SmtpServer) -> None:
    title = "Отчёт\r\nBcc: victim@example.com\r\n\r\nbody"
    await mailer(smtp_plain).send(message(event(task=summary(title=title))))
    (mail,) = smtp_plain.inbox.messages
    assert mail["Bcc"] is None
    assert smtp_plain.inbox.envelopes == [("planfix@example.com", ["pm@example.com"])]
    assert "\n" not in mail["Subject"]


async def test_refused_recipient_fails_for_good(smtp_plain: SmtpServer) -> None:
    smtp_plain.inbox.refuse_rcpt = 550
    result = await mailer(smtp_plain).send(message())
    assert isinstance(result, FailedForGood) and "550" in result.reason


async def test_deferred_recipient_is_retried(smtp_plain: SmtpServer) -> None:
    smtp_plain.inbox.refuse_rcpt = 450
    assert isinstance(await mailer(smtp_plain).send(message()), RetryLater)


async def test_deferred_data_is_retried(smtp_plain: SmtpServer) -> None:
    smtp_plain.inbox.refuse_data = 451
    assert isinstance(await mailer(smtp_plain).send(message()), RetryLater)


async def test_server_down_is_retried(smtp_plain: SmtpServer) -> None:
    down = mailer(smtp_plain, port=9)
    assert isinstance(await down.send(message()), RetryLater)


async def test_starttls_is_required_not_opportunistic(smtp_plain: SmtpServer) -> None:
    insists = mailer(smtp_plain, security="starttls")  # this server offers no STARTTLS
    result = await insists.send(message())
    assert isinstance(result, Misconfigured)  # the operator's to fix: no blind retry
    assert "STARTTLS" in result.reason and "channels.mail" in result.reason
    assert smtp_plain.inbox.messages == []


async def test_an_untrusted_certificate_is_refused(smtp: SmtpServer) -> None:
    if smtp.security == "none":
        return
    strict = channel("mail", {**smtp.options(), "ca_file": None})
    result = await strict.send(message())
    assert isinstance(result, RetryLater) and smtp.inbox.messages == []


async def test_check_reaches_the_server(smtp: SmtpServer) -> None:
    assert (await mailer(smtp).check()).ok
    assert not (await mailer(smtp, port=9).check()).ok


def test_a_password_never_goes_in_clear_to_a_remote_host() -> None:
    base = {"type": "email", "sender": "a@example.com", "recipients": ["b@example.com"]}
    secret = {"username": "robot", "password": "p", "security": "none"}
    with pytest.raises(ValidationError, match="only over TLS"):
        EmailOptions.model_validate({**base, **secret, "host": "smtp.example.com"})
    EmailOptions.model_validate({**base, **secret, "host": "127.0.0.1"})  # a local relay
    EmailOptions.model_validate({**base, **secret, "host": "smtp.example.com", "security": "tls"})
    EmailOptions.model_validate({**base, "host": "smtp.example.com", "security": "none"})


async def test_starttls_then_login_delivers(ca: tuple[trustme.CA, Path]) -> None:
    """The usual port-587 setup: STARTTLS, then AUTH. The server offers AUTH
    only after TLS, so what it offered before must be asked again."""
    with SmtpServer("starttls", *ca, users={"robot": "mail-pass-1"}) as server:
        sender = mailer(server, username="robot", password="mail-pass-1")
        assert isinstance(await sender.send(message()), Delivered)
        assert (await sender.check()).ok
        wrong = mailer(server, username="robot", password="nope")
        refused = await wrong.send(message())
        assert isinstance(refused, Misconfigured) and "login" in refused.reason
    assert len(server.inbox.messages) == 1
