"""PostgreSQL for the tests: the machine's server (127.0.0.1:5432, trust
auth, database ``test``; PLANFIX_NOTIFIER_TEST_POSTGRES names another), and a
schema of each test's own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

URL = os.environ.get("PLANFIX_NOTIFIER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def reachable() -> str | None:
    """None when the server answers, else why not."""
    try:
        with psycopg.connect(URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {URL} does not answer ({exc}); the tests need it"
    return None


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A schema name no run has used; whatever a test made in it is dropped."""
    name = f"pn_test_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
