"""A real SMTP server (aiosmtpd) on loopback: plain, STARTTLS or implicit TLS,
with a certificate from a throwaway CA (trustme), and AUTH for given users."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse_rcpt: int | None = None  # answer RCPT TO with this code (e.g. 550, 450)
    refuse_data: int | None = None

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.refuse_rcpt is not None:
            return f"{self.refuse_rcpt} mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data is not None:
            return f"{self.refuse_data} try later"
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content, policy=policy.default))
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted"


class SmtpServer:
    def __init__(
        self,
        security: str,
        ca: trustme.CA,
        ca_file: Path,
        port: int = 0,
        inbox: Inbox | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.security = security
        self.inbox = inbox or Inbox()
        self.port = port or free_port()
        self.ca_file = ca_file
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        options: dict[str, Any] = {"hostname": "127.0.0.1", "port": self.port}
        if security == "starttls":
            options.update(tls_context=context, require_starttls=True)
        elif security == "tls":
            options.update(ssl_context=context)
        if users is not None:  # AUTH offered (after TLS, where there is TLS)

            def authenticate(*args: Any) -> AuthResult:
                data = args[-1]
                ok = (
                    isinstance(data, LoginPassword)
                    and users.get(data.login.decode()) == data.password.decode()
                )
                return AuthResult(success=ok, handled=False)  # else aiosmtpd says nothing

            options.update(authenticator=authenticate, auth_require_tls=security != "none")
        self.controller = Controller(self.inbox, **options)

    def options(self, **extra: Any) -> dict[str, Any]:
        """The [channels.mail] table that reaches this server."""
        return {
            "type": "email",
            "host": "127.0.0.1",
            "port": self.port,
            "security": self.security,
            "sender": "planfix@example.com",
            "recipients": ["pm@example.com"],
            "ca_file": str(self.ca_file),
            "timeout_s": 5,
            **extra,
        }

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()

    def restarted(self, ca: trustme.CA) -> SmtpServer:
        """The same inbox served again on the same port (after ``__exit__``), with
        a certificate from ``ca``: another authority's makes the client's TLS fail."""
        return SmtpServer(self.security, ca, self.ca_file, self.port, self.inbox).__enter__()
