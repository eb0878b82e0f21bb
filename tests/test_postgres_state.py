"""The service with its state in PostgreSQL (``state.url``): it polls and
alerts as on SQLite, survives a restart, and a second instance on the same
state stands by and takes over when the first dies — kill -9 included."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from notifier.store import Store
from notifier.store.postgres import PostgresDatabase
from tests import postgres
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import _toml, settings, until
from tests.test_operations import run_cli, wait_for
from tests.watch.test_poller import Harness

# trust auth takes any password: one here shows that none is ever printed
PASSWORD = "pg-Pa55word-QRS"
URL = postgres.URL.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


@pytest.fixture
def schema() -> Iterator[str]:
    if (why := postgres.reachable()) is not None:
        pytest.fail(why)
    with postgres.fresh_schema() as name:
        yield name


def pg_settings(
    emulator: Emulator, telegram: TelegramServer, schema: str, tasks: list[int]
) -> dict[str, Any]:
    data = settings(emulator, telegram, Path("unused.sqlite3"), tasks)
    data["state"] = {"url": URL, "schema": schema}
    return data


def run(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``planfix-notifier run``, its log (JSON lines) to ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "notifier", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def sent_in(schema: str) -> int:
    """Deliveries the state records as sent."""
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT COUNT(*) FROM {} WHERE state = 'sent'").format(
            sql.Identifier(schema, "outbox")
        )
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
async def service_on_postgres(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, schema: str
) -> AsyncIterator[Any]:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    started: list[Service] = []

    async def start(tasks: list[int]) -> Service:
        config = config_from_dict(
            pg_settings(emulator, telegram, schema, tasks), source="test", environ={}
        )
        service = Service(config)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def test_alerts_and_a_restart_on_postgres(
    service_on_postgres: Any, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Сверка в Postgres", status=1)["id"]
    first = await service_on_postgres([task])
    await until(lambda: first.poller.records[task].card is not None)
    control.change_task(task, status=2)
    await until(lambda: len(telegram.fake.sent) == 1)
    assert "Новая → В работе" in telegram.fake.sent[0].text
    await first.stop(drain_s=2)
    control.change_task(task, status=3)  # while it is down
    second = await service_on_postgres([task])
    assert second.poller.records[task].card is not None  # the baseline, read back
    await until(lambda: len(telegram.fake.sent) == 2)
    assert "В работе → Завершённая" in telegram.fake.sent[1].text
    await asyncio.sleep(1.5)  # a few rounds more: nothing is sent again
    assert len(telegram.fake.sent) == 2
    assert (await second.store.outbox_counts()) == {"sent": 2}


def test_a_standby_takes_over_after_kill_9(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    schema: str,
    tmp_path: Path,
) -> None:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    task = control.create_task(title="Дежурство", status=1)["id"]
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(pg_settings(emulator, telegram, schema, [task])))
    logs = [tmp_path / "first.log", tmp_path / "second.log"]

    first = run(config, logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "started" in logs[0].read_text(), within=30)
        second = run(config, logs[1])
        wait_for(lambda: "standby" in logs[1].read_text(), within=30)
        said = json.loads(next(line for line in logs[1].read_text().splitlines()
                               if "standby" in line))  # fmt: skip
        assert f"pid {first.pid}" in said["holder"]
        control.change_task(task, status=2)
        wait_for(lambda: len(telegram.fake.sent) == 1, within=30)
        # (killed between the send and its record, it would go again: a
        # duplicate the design allows for what is in flight; not tested here)
        wait_for(lambda: sent_in(schema) == 1, within=30)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
        wait_for(lambda: "started" in logs[1].read_text(), within=30)
        took_over = time.monotonic() - killed
        assert took_over < 30
        control.change_task(task, status=3)
        wait_for(lambda: len(telegram.fake.sent) == 2, within=30)
        assert "В работе → Завершённая" in telegram.fake.sent[1].text
        time.sleep(1)
        assert len(telegram.fake.sent) == 2  # nothing the first had sent went again
    finally:
        stop(first, *([second] if second else []))
    assert second is not None and second.returncode == 0
    for log in logs:
        assert PASSWORD not in log.read_text()


def test_check_and_status_name_the_database_never_the_password(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    schema: str,
    tmp_path: Path,
) -> None:
    task = control.create_task(title="Проверка базы", status=1)["id"]
    config = tmp_path / "notifier.toml"
    data = pg_settings(emulator, telegram, schema, [task])
    config.write_text(_toml(data))
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout
    (row,) = [line for line in checked.stdout.splitlines() if line.startswith("state ")]
    assert f"ok    PostgreSQL 127.0.0.1:5432/test (schema {schema})" in row
    assert run_cli("poll", str(task), "--send", "--config", str(config)).returncode == 0
    status = run_cli("status", "--config", str(config))
    assert status.returncode == 0 and "Проверка базы" in status.stdout
    for said in (checked, status):
        assert PASSWORD not in said.stdout + said.stderr
    data["state"]["url"] = URL.replace(":5432/", ":9/")  # nothing listens there
    config.write_text(_toml(data))
    refused = run_cli("status", "--config", str(config))
    assert refused.returncode == 2
    assert refused.stderr.startswith("planfix-notifier: PostgreSQL 127.0.0.1:9/test")
    assert PASSWORD not in refused.stderr


async def test_a_watch_while_a_poll_of_the_task_is_out_raises_its_change_once(
    emulator: Emulator, control: EmulatorControl, schema: str, tmp_path: Path
) -> None:
    """On PostgreSQL every store call yields: the bot's /watch of a task (its
    card read and ingested) landed between a poll's read of the old card and
    its save, and both raised the change."""
    harness = Harness(emulator, control, {"url": postgres.URL, "schema": schema})
    task = control.create_task(title="Гонка", status=1)["id"]
    service = await harness.service([task])
    try:
        await harness.settle(service)
        control.change_task(task, status=2)
        poller = service.poller
        card = await service.client.get_task(task)  # the bot's read
        reached = asyncio.Event()
        load_card = poller.store.load_card

        async def first_read(task_id: int) -> Any:
            reached.set()  # the poll is between its read of the old card and its save
            return await load_card(task_id)

        poller.store.load_card = first_read  # type: ignore[method-assign]
        poll = asyncio.create_task(poller.poll([task]))
        await reached.wait()
        poller.store.load_card = load_card  # type: ignore[method-assign]
        await asyncio.gather(poll, poller.ingest(card))
        assert harness.kinds() == ["status_changed"]
    finally:
        for each in harness.services:
            await each.stop()


def test_a_lost_lock_stops_the_instance_at_once_and_the_standby_goes_on(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    schema: str,
    tmp_path: Path,
) -> None:
    """PostgreSQL ended the lock's session (a restart, an admin): the standby
    takes the lock within seconds, so the first must stop sending at once
    (exit 1, for systemd to start it again as the standby). A standby stops
    at SIGTERM."""
    task = control.create_task(title="Потеря замка", status=1)["id"]
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(pg_settings(emulator, telegram, schema, [task])))
    logs = [tmp_path / "first.log", tmp_path / "second.log", tmp_path / "third.log"]

    first = run(config, logs[0])
    others: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(lambda: "started" in logs[0].read_text(), within=30)
        others.append(run(config, logs[1]))
        wait_for(lambda: "standby" in logs[1].read_text(), within=30)
        with psycopg.connect(postgres.URL, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (f"planfix-notifier {socket.gethostname()} pid {first.pid}"[:63],),
            )
        assert first.wait(timeout=30) == 1
        assert "the state's lock is lost; stopping" in logs[0].read_text()
        wait_for(lambda: "started" in logs[1].read_text(), within=30)
        others.append(run(config, logs[2]))  # a new standby, stopped while it waits
        wait_for(lambda: "standby" in logs[2].read_text(), within=30)
        others[1].send_signal(signal.SIGTERM)
        assert others[1].wait(timeout=10) == 0
        assert "standby stopped" in logs[2].read_text()
    finally:
        stop(first, *others)


def test_a_percent_in_the_password_is_refused_without_quoting_it(tmp_path: Path) -> None:
    # libpq quotes a malformed address in its error: it must never get one
    config = tmp_path / "notifier.toml"
    config.write_text(
        '[planfix]\naccount = "acme"\napi_key = "k"\ntoken = "t"\n'
        '[state]\nurl = "postgresql://robot:pa%zzss@127.0.0.1/test"\n'
    )
    refused = run_cli("status", "--config", str(config))
    assert refused.returncode == 2
    assert "state.url: a % in the address must be written %25" in refused.stderr
    assert "zzss" not in refused.stderr


async def test_a_role_that_owns_its_schema_but_not_the_database_can_run(schema: str) -> None:
    role = f"{schema}_owner"
    with psycopg.connect(postgres.URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
    try:
        url = postgres.URL.replace("postgresql://postgres@", f"postgresql://{role}@")
        store = Store(PostgresDatabase(url, schema))
        await store.set_meta("works", "yes")
        assert await store.get_meta("works") == "yes"
        await store.close()
    finally:
        with psycopg.connect(postgres.URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
