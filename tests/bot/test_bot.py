"""The Telegram bot against the fake Bot API, inside a real running service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifier.app import Service
from notifier.bot.resolve import TaskRef, parse_duration, parse_task
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import settings, until

MSK = ZoneInfo("Europe/Moscow")

TEAM, STRANGERS, ADMIN, MEMBER, STRANGER = -1001112223334, -1009998887776, 7, 8, 666


@pytest.fixture
async def bot_service(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000
    running: list[Service] = []

    async def start(**bot: Any) -> Service:
        data = settings(emulator, telegram, tmp_path / "state.sqlite3", [])
        data["bot"] = {
            "channel": "team",
            "allowed_chats": [TEAM],
            "admins": [ADMIN],
            "poll_timeout_s": 1,
            **bot,
        }
        service = Service(config_from_dict(data, source="test", environ={}))
        await service.start()
        await service.start_bot()
        running.append(service)
        return service

    yield start
    for service in running:
        await service.stop()


def replies(telegram: TelegramServer, chat: int) -> list[str]:
    return telegram.fake.texts(chat)


async def said(telegram: TelegramServer, chat: int, user: int, text: str, expect: str) -> str:
    before = len(replies(telegram, chat))
    telegram.fake.say(chat, user, text)
    await until(
        lambda: len(replies(telegram, chat)) > before and expect in replies(telegram, chat)[-1],
        within=15,
    )
    return replies(telegram, chat)[-1]


async def test_start_and_help_explain_and_show_the_chat_id(
    bot_service: Callable[[], Awaitable[Service]], telegram: TelegramServer
) -> None:
    await bot_service()
    text = await said(telegram, STRANGERS, STRANGER, "/start", "Chat id этого чата")
    assert str(STRANGERS) in text and "не может подписываться" in text and "/watch" in text
    assert "/unwatch" in await said(telegram, TEAM, MEMBER, "/help", "Команды")


async def test_a_stranger_is_refused_politely(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    service = await bot_service()
    task = control.create_task(title="Чужая", status=1)
    for command in (
        f"/watch {task['general']}",
        "/list",
        "/mute all 1h",
        "/status",
        f"/unwatch {task['general']}",
    ):
        text = await said(telegram, STRANGERS, STRANGER, command, "Извините")
        assert str(STRANGERS) in text
    assert await service.store.subscriptions() == []


async def test_watch_becomes_alerts_in_that_chat(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    await bot_service()
    deadline = datetime.now(MSK) + timedelta(days=30)
    task = control.create_task(
        title="Отчёт для чата", status=1, endTime=deadline.strftime("%d-%m-%Y 18:00")
    )
    text = await said(telegram, TEAM, MEMBER, f"/watch #{task['general']}", "Слежу")
    shown = deadline.strftime("%d.%m 18:00")
    assert f"#{task['general']} «Отчёт для чата» — Новая, срок: {shown}" in text
    assert "Проверяется примерно каждые" in text
    control.change_task(task["id"], status=2)
    await until(lambda: any("Новая → В работе" in t for t in replies(telegram, TEAM)), within=20)
    alert = next(s for s in telegram.fake.sent if "Новая → В работе" in s.text)
    buttons = [b for row in alert.reply_markup["inline_keyboard"] for b in row]
    assert buttons[0]["url"].endswith(f"/task/{task['general']}")
    assert {b.get("callback_data") for b in buttons[1:]} == {
        f"mute:{task['id']}",
        f"unwatch:{task['id']}",
    }
    listing = await said(telegram, TEAM, MEMBER, "/list", "Отчёт для чата")
    assert "В работе" in listing and "каждые" in listing
    status = await said(telegram, TEAM, MEMBER, "/status", "Квота")
    assert "Квота PlanFix" in status and "Состояние: в порядке." in status
    zone = datetime.now(ZoneInfo("Europe/Moscow")).strftime("%Z")
    assert f"{zone}." in status  # times carry the account zone's label


async def test_watch_by_link_and_by_id_and_unknown_ones(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    await bot_service()
    task = control.create_task(title="По ссылке", status=1)
    await said(
        telegram,
        TEAM,
        MEMBER,
        f"/watch https://demo.planfix.ru/task/{task['general']}",
        "По ссылке",
    )
    await said(telegram, TEAM, MEMBER, f"/watch id:{task['id']} title_changed", "По ссылке")
    assert "Не нашёл" in await said(telegram, TEAM, MEMBER, "/watch 99999", "Не нашёл")
    assert "Не знаю событий" in await said(
        telegram, TEAM, MEMBER, f"/watch {task['general']} nonsense", "Не знаю"
    )


async def test_mute_and_unmute(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    service = await bot_service()
    task = control.create_task(title="Тише", status=1)
    await said(telegram, TEAM, MEMBER, f"/watch {task['general']}", "Слежу")
    await said(telegram, TEAM, MEMBER, f"/mute {task['general']} 2h", "Тишина до")
    control.change_task(task["id"], status=2)
    await until(lambda: service.poller.records[task["id"]].card.status == 2, within=15)  # type: ignore[union-attr]
    await asyncio.sleep(1)
    assert not any("Новая → В работе" in t for t in replies(telegram, TEAM))
    await said(telegram, TEAM, MEMBER, "/unmute", "снова включены")
    control.change_task(task["id"], status=3)
    await until(
        lambda: any("В работе → Завершённая" in t for t in replies(telegram, TEAM)), within=20
    )


async def test_buttons_mute_and_stop_watching_with_the_same_rules(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    service = await bot_service()
    task = control.create_task(title="Кнопки", status=1)
    await said(telegram, TEAM, MEMBER, f"/watch {task['general']}", "Слежу")
    telegram.fake.press(STRANGERS, STRANGER, f"unwatch:{task['id']}")
    await until(lambda: any("Извините" in t for t in replies(telegram, STRANGERS)), within=15)
    assert len(await service.store.subscriptions(TEAM)) == 1
    telegram.fake.press(TEAM, MEMBER, f"mute:{task['id']}")

    async def muted() -> bool:
        return ((await service.store.subscriptions(TEAM))[0].muted_until or 0) > time.time() + 86000

    await until(muted, within=15)
    telegram.fake.press(TEAM, MEMBER, f"unwatch:{task['id']}")

    async def unsubscribed() -> bool:
        return await service.store.subscriptions(TEAM) == []

    await until(unsubscribed, within=15)
    assert "answerCallbackQuery" in telegram.fake.calls


async def test_subscriptions_survive_a_restart_and_admins_see_all(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    first = await bot_service()
    task = control.create_task(title="Переживёт перезапуск", status=1)
    await said(telegram, TEAM, MEMBER, f"/watch {task['general']}", "Слежу")
    await first.stop()
    second = await bot_service()
    assert [s.task_id for s in await second.store.subscriptions(TEAM)] == [task["id"]]
    control.change_task(task["id"], status=2)
    await until(lambda: any("Новая → В работе" in t for t in replies(telegram, TEAM)), within=20)
    listing = await said(telegram, 12345, ADMIN, "/list", "Переживёт")
    assert f"[{TEAM}]" in listing  # an admin sees every chat's subscriptions
    await said(telegram, 12345, ADMIN, f"/unwatch {task['general']} {TEAM}", "Больше не слежу")
    assert await second.store.subscriptions() == []


def test_task_references_and_durations() -> None:
    assert parse_task("418") == parse_task("#418") == TaskRef(418)
    assert parse_task("https://acme.planfix.ru/task/418/") == TaskRef(418)
    assert parse_task("id:1001") == TaskRef(1001, is_id=True)
    assert parse_task("задача") is None
    assert (
        parse_duration("30m"),
        parse_duration("2h"),
        parse_duration("1d"),
        parse_duration("90"),
    ) == (1800, 7200, 86400, 5400)
    assert parse_duration("soon") is None


async def test_a_chat_is_held_to_its_watch_rate_and_subscription_cap(
    bot_service: Callable[..., Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    """Each /watch reads PlanFix from the day's small reserve: one chat could
    spend all of it. Past the limits it gets a clear reply and costs nothing."""
    service = await bot_service(watch_per_hour=2, max_subscriptions=2)
    tasks = [control.create_task(title=f"Предел {n}", status=1)["general"] for n in range(4)]
    for number in tasks[:2]:
        await said(telegram, TEAM, MEMBER, f"/watch {number}", "Слежу")
    reply = await said(telegram, TEAM, MEMBER, f"/watch {tasks[2]}", "предел")
    assert "bot.max_subscriptions" in reply
    await said(telegram, TEAM, MEMBER, f"/unwatch {tasks[0]}", "Больше не слежу")
    asked = sum(control.state()["requests"].values())
    reply = await said(telegram, TEAM, MEMBER, f"/watch {tasks[3]}", "Слишком часто")
    assert "bot.watch_per_hour" in reply
    assert sum(control.state()["requests"].values()) == asked  # refused without a request
    assert await said(telegram, TEAM, ADMIN, f"/watch {tasks[3]}", "Слежу")  # admins are not held
    assert len(await service.store.subscriptions(TEAM)) == 2


async def test_watch_a_project_tells_the_chat_of_every_task_in_it(
    bot_service: Callable[[], Awaitable[Service]],
    telegram: TelegramServer,
    control: EmulatorControl,
) -> None:
    service = await bot_service()
    ours = [
        control.create_task(title=f"Проектная {n}", status=1, project={"id": 12})["id"]
        for n in range(2)
    ]
    control.create_task(title="Чужая", status=1, project={"id": 13})
    text = await said(telegram, TEAM, MEMBER, "/watch project 12", "Слежу")
    assert "проект" in text and "12" in text
    await until(lambda: set(ours) <= set(service.poller.records), within=20)
    await until(lambda: all(service.poller.records[t].card for t in ours), within=20)
    control.change_task(ours[1], status=2)
    await until(
        lambda: any("Проектная 1" in t and "В работе" in t for t in replies(telegram, TEAM)),
        within=20,
    )
    assert "проект 12" in await said(telegram, TEAM, MEMBER, "/list", "проект")
    await said(telegram, TEAM, MEMBER, "/unwatch project 12", "Больше не слежу")
    assert await service.store.subscribed_projects() == []
