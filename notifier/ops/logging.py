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
from datetime import UTC, datetime, tzinfo
from typing import TextIO
from zoneinfo import ZoneInfo

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
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConsoleTime:
    """The console's time prefix, in the account's zone and with its label
    ("2026-11-30 14:05:03 MSK"), as every time a person reads: deadlines are
    in that zone too. UTC until the config names the zone; JSON lines keep UTC."""

    def __init__(self) -> None:
        self.zone: tzinfo = UTC

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        stamp = datetime.now(self.zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        event_dict["timestamp"] = stamp
        return event_dict


CONSOLE_TIME = ConsoleTime()


def use_zone(zone: str) -> None:
    """The console's times from now on in ``zone`` (planfix.timezone)."""
    CONSOLE_TIME.zone = ZoneInfo(zone)


PROCESSORS: list[Processor] = []  # structlog's, kept as one list (see setup)


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
        structlog.processors.TimeStamper(fmt="iso", utc=True) if as_json else CONSOLE_TIME,
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
    if level.upper() not in LEVELS:
        raise ValueError(f"unknown log level {level!r}: {', '.join(LEVELS)}")
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    # The same list, refilled: a logger cached by an earlier setup (a command
    # run again in one process: the tests) keeps following the configuration.
    PROCESSORS[:] = [*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter]
    structlog.configure(
        processors=PROCESSORS,
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return REDACTOR


def get(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
