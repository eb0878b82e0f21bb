"""Logging with structlog: JSON lines when stderr is not a terminal (systemd,
Docker), readable console output when it is. The stdlib loggers of httpx,
telegram and apscheduler go through the same processors, so the same
redaction applies to every line the service writes.

Secrets are removed twice over: by key name (``token``, ``password``…) and by
value — the configured secrets themselves, and anything shaped like a
Telegram bot token — wherever they appear in a message.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "***"
SECRET_KEYS = re.compile(r"(token|password|secret|api_key|sid|authorization|signature)", re.I)
# A Telegram bot token, also inside a URL's …/bot<token>/…
BOT_TOKEN = re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{20,}")
# httpx logs each request's URL at INFO; Telegram's URLs carry the bot token.
QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "apscheduler": logging.WARNING,
}


class Redactor:
    """A structlog processor; ``secrets`` can be replaced on a config reload."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        # Longest first, so that a secret containing another is removed whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return BOT_TOKEN.sub(REDACTED, text)

    def _value(self, key: str, value: object) -> object:
        if SECRET_KEYS.search(key) and value not in (None, ""):
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        return value

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        for key, value in list(event_dict.items()):
            if key in ("_record", "_from_structlog"):
                continue
            # "event" is the message itself: scrubbed by value, never blanked by name.
            event_dict[key] = self._value("" if key == "event" else key, value)
        return event_dict


REDACTOR = Redactor()


def setup(
    *, level: str = "INFO", stream: TextIO | None = None, json: bool | None = None
) -> Redactor:
    """Configure structlog and the stdlib root logger; return the redactor."""
    out = stream or sys.stderr
    as_json = (not out.isatty()) if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,  # tracebacks become text: redacted too
        REDACTOR,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return REDACTOR


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
