"""Alerts end to end: PlanFix emulator → service → fake Telegram and aiosmtpd,
in real time, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.smtp import SmtpServer
from tests.fakes.telegram import TelegramServer

CHAT = -1001234567890


def settings(
    emulator: Emulator, telegram: TelegramServer, state: Path, tasks: list[int], **more: Any
) -> dict[str, Any]:
    emu = emulator.account.settings
    return {
        "planfix": {
            "account": emu.account,
            "endpoint": emulator.endpoint,
            "api_key": emu.api_key,
            "token": emu.token,
            "daily_quota": emu.daily_quota,
            "requests_per_second": 20,
        },
        "state": {"path": str(state)},
        "metrics": {"listen": ""},  # the default port may be taken (a service, a parallel run)
        "watch": {"tasks": tasks, "min_interval_s": 1},
        "alerts": {"group_wait_s": 0.2, "retry_base_s": 0.2, "retry_max_s": 1},
        "channels": {
            "team": {
                "type": "telegram",
                "bot_token": telegram.fake.token,
                "chat_ids": [CHAT],
                "api_url": telegram.url,
                "per_chat_per_s": 20,
            },
            **more,
        },
    }


def midday_zone() -> str:
    """A time zone where it is about midday now: a test that counts a quota
    day's requests on both sides (the service, the emulator) never has the
    day end under it, whatever the hour it runs at."""
    offset = max(-12, min(14, 12 - datetime.now(UTC).hour))
    return f"Etc/GMT{-offset:+d}"  # (POSIX signs: Etc/GMT-3 is UTC+3)


async def until(condition: Callable[[], bool | Awaitable[bool]], within: float = 45) -> None:
    """Wait for ``condition`` (a test, or a coroutine function: one asking the store).
    Long enough for two polls of a task at any hour: a 5,000-a-day budget
    spread over a quota day just begun polls one task every 17 s."""
    deadline = time.monotonic() + within
    while not await _met(condition):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


async def _met(condition: Callable[[], bool | Awaitable[bool]]) -> bool:
    met = condition()
    return await met if inspect.isawaitable(met) else met


@pytest.fixture
async def running(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    started: list[Service] = []

    async def start(tasks: list[int], **channels: Any) -> Service:
        config = config_from_dict(
            settings(emulator, telegram, tmp_path / "state.sqlite3", tasks, **channels),
            source="test",
            environ={},
        )
        service = Service(config)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def test_a_status_change_reaches_telegram_and_mail(
    running: Callable[..., Awaitable[Service]],
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
) -> None:
    task = control.create_task(title="Согласовать договор", status=1)
    service = await running([task["id"]], mail=smtp_plain.options())
    await until(lambda: service.poller.records[task["id"]].card is not None)
    control.change_task(task["id"], status=2)
    await until(lambda: bool(telegram.fake.sent) and bool(smtp_plain.inbox.messages))
    (sent,) = telegram.fake.sent
    assert sent.chat_id == str(CHAT)
    assert "<b>Статус: Новая → В работе</b>" in sent.text and "Согласовать договор" in sent.text
    (mail,) = smtp_plain.inbox.messages
    assert "Статус: Новая → В работе" in mail["Subject"]


async def test_a_channel_down_for_a_while_loses_nothing_and_keeps_order(
    running: Callable[..., Awaitable[Service]],
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
) -> None:
    task = control.create_task(title="Ревизия склада", status=1)
    service = await running([task["id"]], mail=smtp_plain.options())
    await until(lambda: service.poller.records[task["id"]].card is not None)
    telegram.fake.inject("server_error", times=-1)

    def status() -> int | None:
        card = service.poller.records[task["id"]].card
        return card.status if card else None

    for new in (2, 4, 2, 3):
        control.change_task(task["id"], status=new)
        await until(lambda new=new: status() == new)  # type: ignore[misc]
    await until(lambda: len(smtp_plain.inbox.messages) >= 1)  # mail was not held up
    assert telegram.fake.sent == []
    telegram.fake.clear()
    await until(
        lambda: (
            "Отложенная → В работе" in " ".join(telegram.fake.texts(CHAT))
            and "В работе → Завершённая" in " ".join(telegram.fake.texts(CHAT))
        )
    )
    text = "\n".join(telegram.fake.texts(CHAT))
    order = [
        "Новая → В работе",
        "В работе → Отложенная",
        "Отложенная → В работе",
        "В работе → Завершённая",
    ]
    positions = [text.index(step) for step in order]
    assert positions == sorted(positions)


async def test_a_blocked_bot_is_a_dead_letter_and_the_operator_is_told(
    running: Callable[..., Awaitable[Service]],
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
) -> None:
    task = control.create_task(title="Закрыть квартал", status=1)
    service = await running([task["id"]], mail=smtp_plain.options())
    await until(lambda: service.poller.records[task["id"]].card is not None)
    telegram.fake.inject("forbidden", CHAT)
    control.change_task(task["id"], status=2)
    await until(
        lambda: any("не может доставить" in m["Subject"] for m in smtp_plain.inbox.messages)
    )
    assert (await service.store.outbox_counts()).get("dead") == 1
    ((channel, _, reason, _),) = await service.store.dead_letters()
    assert channel == "team" and "blocked" in reason
    control.change_task(task["id"], status=3)  # unblocked: the next alert gets through
    await until(lambda: any("снова доставляет" in m["Subject"] for m in smtp_plain.inbox.messages))
    failing = [m for m in smtp_plain.inbox.messages if "не может доставить" in m["Subject"]]
    assert len(failing) == 1  # once per incident


async def test_stop_ends_a_poll_round_under_way(
    running: Callable[..., Awaitable[Service]], control: EmulatorControl
) -> None:
    task = control.create_task(title="Медленный ответ", status=1)
    control.inject("slow", delay_s=30, times=-1)  # the round waits on PlanFix
    service = await running([task["id"]])
    await until(lambda: service.main.polling is not None)
    under_way = service.main.polling
    assert under_way is not None
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(service.stop(), 10)
    assert under_way.done() and service.main.polling is None
    assert [e for e in logs if e["log_level"] in ("warning", "error", "critical")] == []


def test_killed_during_a_burst_nothing_is_lost(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    ids = [control.create_task(title=f"Задача {n}", status=1)["id"] for n in range(12)]
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(settings(emulator, telegram, tmp_path / "state.sqlite3", ids)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    service = start()
    try:
        # Every baseline stored (not merely asked for: on a loaded machine a
        # change made before its baseline is the baseline, and never alerted).
        deadline = time.monotonic() + 30
        while baselines(tmp_path / "state.sqlite3") < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for n, task_id in enumerate(ids):
            control.change_task(task_id, status=2)
            if n == 6:
                service.send_signal(signal.SIGKILL)  # mid-burst
                service.wait()
        service = start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = "\n".join(telegram.fake.texts(CHAT))
            if all(f"Задача {n}" in shown for n in range(12)):
                break
            time.sleep(0.2)
        shown = "\n".join(telegram.fake.texts(CHAT))
        missing = [n for n in range(12) if f"Задача {n}" not in shown]
        assert missing == [], f"lost: {missing}"
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=10)


def baselines(state: Path) -> int:
    """How many tasks have a stored snapshot, read beside the running service."""
    if not state.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        try:
            (count,) = db.execute(
                "SELECT count(*) FROM task_state WHERE snapshot IS NOT NULL"
            ).fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
    return int(count)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for the settings above."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_value(value)}")
    out = "\n".join(lines) + "\n"
    for name, table in tables:
        out += f"\n[{name}]\n" + _toml(table, prefix=f"{name}.")
    return out


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)
