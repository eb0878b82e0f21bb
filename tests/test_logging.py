"""The log's set-up, done again in one process (each CLI command a test runs
in-process sets it up): loggers already in use keep following it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from notifier.ops import logging as oplog


@pytest.fixture
def logging_restored() -> Iterator[None]:
    config, root = structlog.get_config(), logging.getLogger()
    processors, handlers, level = list(config["processors"]), root.handlers[:], root.level
    yield
    config["processors"][:] = processors  # (the same list: loggers cached on it follow)
    structlog.configure(**config)
    root.handlers[:], root.level = handlers, level


def test_a_second_setup_reaches_a_logger_cached_by_the_first(logging_restored: None) -> None:
    stream = io.StringIO()
    oplog.setup(level="INFO", stream=stream, json=True)
    log = oplog.get("tests.cached")
    log.info("first")  # (cached now: structlog's cache_logger_on_first_use)
    oplog.setup(level="ERROR", stream=stream, json=True)
    with structlog.testing.capture_logs() as logs:
        log.error("second")
    assert [entry["event"] for entry in logs] == ["second"]
    assert '"first"' in stream.getvalue() and '"second"' not in stream.getvalue()
