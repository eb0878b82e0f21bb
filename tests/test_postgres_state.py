"""The service with its state in PostgreSQL (``state.url``): it polls and
alerts as on SQLite, survives a restart, and a second instance on the same
state stands by and takes over when the first dies — kill -9 included."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from tests import postgres
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import _toml, settings, until
from tests.test_operations import run_cli, wait_for

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

    def start(log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )

    first = start(logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: "started" in logs[0].read_text(), within=30)
        second = start(logs[1])
        wait_for(lambda: "standby" in logs[1].read_text(), within=30)
        said = json.loads(next(line for line in logs[1].read_text().splitlines()
                               if "standby" in line))  # fmt: skip
        assert f"pid {first.pid}" in said["holder"]
        control.change_task(task, status=2)
        wait_for(lambda: len(telegram.fake.sent) == 1, within=30)
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
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
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
