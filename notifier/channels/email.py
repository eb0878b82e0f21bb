"""E-mail through aiosmtplib: text and HTML alternatives, one thread per task.

``security`` is ``none``, ``starttls`` (required, never opportunistic: a server
that does not offer it is an error) or ``tls`` (implicit TLS, port 465). The
subject is one line however the task is titled. Each message has its own
Message-ID; a message about one task carries In-Reply-To/References to that
task's thread id, so mail clients keep a task's alerts together.
"""

from __future__ import annotations

import asyncio
import email.policy
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
from pydantic import SecretStr, model_validator

from ..ops.errors import described
from ..planfix.client import is_loopback
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

# CPython folds a long non-ASCII header between two encoded-words at a space,
# and RFC 2047 tells every reader to drop whitespace between encoded-words: a
# subject would arrive as "отчётпо продажам". Unfolded, it arrives intact; our
# subjects are capped at 200 characters, far below SMTP's 998-byte lines.
WIRE_POLICY = email.policy.SMTP.clone(max_line_length=0)


class EmailOptions(ChannelOptions):
    type: Literal["email"] = "email"
    host: str
    port: int = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    recipients: list[str]
    timeout_s: float = 60.0  # for the whole send: connect, TLS, login, data
    ca_file: Path | None = None  # trust this CA too (a private mail server)

    @model_validator(mode="after")
    def _password_over_tls(self) -> EmailOptions:
        if self.password is not None and self.security == "none" and not is_loopback(self.host):
            raise ValueError(
                'a password goes only over TLS: set security = "starttls" or "tls" '
                "(or send through a relay on this machine)"
            )
        return self


QUIT_S = 5.0  # the goodbye after a message went: brief, and never the send's failure


async def _greet(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.ehlo()
    except aiosmtplib.SMTPHeloError:  # a relay that speaks only HELO
        await smtp.helo()


async def _goodbye(smtp: aiosmtplib.SMTP) -> None:
    """QUIT, briefly, and close whatever the answer: once DATA was accepted
    the message is the server's, and a slow or odd goodbye must not make it a
    retry (a second copy)."""
    try:
        async with asyncio.timeout(QUIT_S):
            await smtp.quit()
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()


class _OptionsRefused(Exception):
    """The mail server cannot work with these options: the operator's to fix."""


class EmailChannel(Channel):
    Options = EmailOptions
    max_length = 10_000_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.options, EmailOptions)
        self.opts: EmailOptions = self.options
        self.domain = self.opts.sender.rpartition("@")[2] or "planfix-notifier"

    def recipients(self) -> list[str]:
        return list(self.opts.recipients)

    def thread_id(self, task_id: int, account: str = "") -> str:
        """A task's thread (``account``: its name; where there are several,
        the same id in two accounts is two tasks)."""
        of = account if self.renderer.accounts else self.renderer.account or "account"
        return f"<planfix-{of}-task-{task_id}@{self.domain}>"

    def build(self, message: Message) -> EmailMessage:
        parts = self.renderer.email(message.events)
        mail = EmailMessage()
        mail["Subject"] = parts.subject  # one_line(): no CR/LF can get here
        mail["From"] = self.opts.sender
        mail["To"] = message.recipient
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid("planfix", domain=self.domain)
        tasks = {(e.account, e.task_id) for e in message.events if e.task_id is not None}
        if len(tasks) == 1:
            account, task_id = tasks.pop()
            thread = self.thread_id(task_id, account)
            mail["In-Reply-To"] = thread
            mail["References"] = thread
        mail.set_content(parts.text)
        mail.add_alternative(parts.html, subtype="html")
        return mail

    def _tls(self) -> ssl.SSLContext | None:
        if self.opts.security == "none":
            return None
        context = ssl.create_default_context()
        if self.opts.ca_file is not None:
            context.load_verify_locations(cafile=str(self.opts.ca_file))
        return context

    def _misconfigured(self, what: str) -> _OptionsRefused:
        return _OptionsRefused(
            f"{what}; a configuration error: check channels.{self.name} "
            "(security, username, password)"
        )

    async def _session(self) -> aiosmtplib.SMTP:
        """Connected, with TLS as ``security`` asks, and logged in where a
        username is set. A server that does not offer what the options need
        (STARTTLS, AUTH) or refuses the login raises :class:`_OptionsRefused`:
        only the operator can fix that, retrying cannot."""
        opts = self.opts
        smtp = aiosmtplib.SMTP(
            hostname=opts.host,
            port=opts.port,
            use_tls=opts.security == "tls",
            start_tls=False,  # below, and required: never opportunistic
            tls_context=self._tls(),
            timeout=opts.timeout_s,
        )
        await smtp.connect()
        try:
            await _greet(smtp)
            if opts.security == "starttls":
                if not smtp.supports_extension("starttls"):
                    raise self._misconfigured("the mail server does not offer STARTTLS")
                await smtp.starttls()
                await _greet(smtp)  # RFC 3207: what was offered before TLS no longer holds
            if opts.username:
                if not smtp.supports_extension("auth"):
                    raise self._misconfigured(
                        f"the mail server does not offer AUTH, yet channels.{self.name}.username "
                        "is set"
                    )
                password = opts.password.get_secret_value() if opts.password else ""
                try:
                    await smtp.login(opts.username, password)
                except aiosmtplib.SMTPAuthenticationError as exc:
                    if 500 <= exc.code < 600:
                        raise self._misconfigured(
                            f"the mail server refuses the login ({exc.code})"
                        ) from None
                    raise
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def send(self, message: Message) -> SendResult:
        raw = self.build(message).as_bytes(policy=WIRE_POLICY)
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                smtp = await self._session()
            try:
                async with asyncio.timeout(self.opts.timeout_s):
                    await smtp.sendmail(self.opts.sender, [message.recipient], raw)
            finally:
                await _goodbye(smtp)
        except _OptionsRefused as exc:
            return Misconfigured(str(exc))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(500 <= c < 600 for c in codes):
                return FailedForGood(f"the mail server refused {message.recipient}: {codes}")
            return RetryLater(f"the mail server deferred {message.recipient}: {codes}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            return RetryLater(f"SMTP login deferred ({exc.code})")
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                return FailedForGood(f"the mail server refused the message: {exc.code}")
            return RetryLater(f"the mail server deferred the message: {exc.code}")
        except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            return RetryLater(f"mail server unreachable: {type(exc).__name__}")
        return Delivered()

    async def check(self) -> CheckResult:
        where = f"{self.opts.host}:{self.opts.port}"
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                smtp = await self._session()
            await _goodbye(smtp)
        except _OptionsRefused as exc:
            return CheckResult(False, f"{where}: {exc}")
        except TimeoutError:
            return CheckResult(False, f"{where}: no answer within {self.opts.timeout_s:.0f} s")
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
            return CheckResult(False, f"{where}: {described(exc)}")
        return CheckResult(True, f"{where} ({self.opts.security})")
