"""The service with its state in PostgreSQL (``state.url``): it polls and
alerts as on SQLite, survives a restart, and several instances on the same
state share the work by leases, taking over from one that dies — kill -9
included."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
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
from tests.test_delivery import _toml, midday_zone, settings, until
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


def poll_holder(schema: str) -> int | None:
    """The PID of the instance holding an unexpired poll lease, if one does."""
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT holder FROM {} WHERE name LIKE 'poll:%%' AND expires > %s").format(
            sql.Identifier(schema, "leases")
        )
        row = conn.execute(query, (time.time(),)).fetchone()
    return int(row[0].split(" pid ")[1].split()[0]) if row else None


def told(telegram: TelegramServer, change: str) -> int:
    return sum(message.text.count(change) for message in telegram.fake.sent)


def test_three_instances_share_the_work_and_take_over_one_killed(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    schema: str,
    tmp_path: Path,
) -> None:
    """Three instances on one schema: one polls, all send (each recipient
    by one at a time). kill -9 of the one polling: another takes the polling
    over once its lease expires, nothing is lost or sent twice, and every
    request PlanFix saw was counted once in the shared quota."""
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    zone = emulator.account.settings.timezone = midday_zone()  # (one quota day throughout)
    tasks = [control.create_task(title=f"Общая {n}", status=1)["id"] for n in range(6)]
    data = pg_settings(emulator, telegram, schema, tasks)
    data["planfix"]["timezone"] = zone
    data["state"]["lease_s"] = LEASE_S
    data["planfix"]["daily_quota"] = 5000
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    logs = [tmp_path / f"{n}.log" for n in range(4)]
    instances = [run(config, log) for log in logs[:3]]
    try:
        for log in logs[:3]:
            wait_for(partial(_says, log, "started"), within=60)
        wait_for(lambda: poll_holder(schema) is not None, within=30)
        said = [
            json.loads(line)["event"] for log in logs[:3] for line in log.read_text().splitlines()
        ]
        assert said.count("polling") == 1  # the others: "another instance polls; this one sends"
        assert said.count("another instance polls; this one sends") == 2
        for task in tasks:
            wait_for(partial(_baseline_stored, schema, task), within=30)
            control.change_task(task, status=2)
        wait_for(lambda: sent_in(schema) == 6, within=60)
        holder = poll_holder(schema)
        (killed,) = [p for p in instances if p.pid == holder]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        at = time.monotonic()
        wait_for(lambda: poll_holder(schema) not in (None, holder), within=60)
        took_over_s = time.monotonic() - at
        assert took_over_s <= LEASE_S + 5, took_over_s
        status = run_cli("status", "--config", str(config)).stdout  # who holds what, since when
        assert f"poll:demo: {socket.gethostname()} pid {poll_holder(schema)} #" in status, status
        for task in tasks:
            control.change_task(task, status=3)
        wait_for(lambda: sent_in(schema) == 12, within=60)
        instances.append(run(config, logs[3]))  # it comes back: to send, and stand by
        wait_for(lambda: "started" in logs[3].read_text(), within=60)
        time.sleep(2)
        assert told(telegram, "Новая → В работе") == 6  # (its sends were all recorded)
        assert told(telegram, "В работе → Завершённая") == 6
        with psycopg.connect(postgres.URL) as conn:
            query = sql.SQL("SELECT SUM(used) FROM {}").format(sql.Identifier(schema, "quota"))
            row = conn.execute(query).fetchone()
        counted = int(row[0]) if row and row[0] else 0
        # Counted before it is sent: the one killed may have counted one it never sent.
        assert 0 < emulator.account.quota_used <= counted <= emulator.account.quota_used + 1
    finally:
        stop(*instances)
    for process, log in zip(instances, logs, strict=True):
        assert process.returncode in (0, -signal.SIGKILL), log.read_text()[-2000:]
        assert PASSWORD not in log.read_text()


LEASE_S = 6.0


def _says(log: Path, what: str) -> bool:
    return what in log.read_text()


def _baseline_stored(schema: str, task: int) -> bool:
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT snapshot IS NOT NULL FROM {} WHERE task_id = %s").format(
            sql.Identifier(schema, "task_state")
        )
        row = conn.execute(query, (task,)).fetchone()
    return bool(row and row[0])


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


async def test_one_instance_polls_and_reads_the_bot_another_takes_both_over(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, schema: str
) -> None:
    """Two instances: one polls and one reads the bot's updates (Telegram
    allows one reader per token); the first stopping gives its leases back
    and the other takes them at once, polling from what the first wrote."""
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    task = control.create_task(title="Передача", status=1)["id"]
    data = pg_settings(emulator, telegram, schema, [task])
    data["state"]["lease_s"] = 30  # (taken over within seconds: given back, not expired)
    data["bot"] = {"channel": "team", "poll_timeout_s": 1}
    services = [Service(config_from_dict(data, source="test", environ={})) for _ in range(2)]
    try:
        for service in services:
            await service.start()
            await service.start_bot()
        assert [s.polls for s in services] == [True, False]
        assert [s.bot is not None for s in services] == [True, False]
        await until(lambda: services[0].poller.records[task].card is not None)
        await services[0].stop()
        await until(lambda: services[1].polls and services[1].bot is not None, within=8)
        await until(lambda: services[1].poller.records[task].card is not None)  # read back
        control.change_task(task, status=2)
        await until(lambda: len(telegram.fake.sent) == 1)
        assert "Новая → В работе" in telegram.fake.sent[0].text
    finally:
        for service in services:
            await service.stop()
