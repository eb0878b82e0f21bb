"""The Telegram channel against the fake Bot API server over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from notifier.channels.base import (
    Channel,
    Delivered,
    FailedForGood,
    Message,
    Misconfigured,
    RetryLater,
)
from notifier.channels.telegram import TelegramChannel, TelegramOptions
from tests.alerts.samples import channel, event, summary
from tests.fakes.telegram import TelegramServer

PRIVATE, GROUP = "1001", "-1002003004005"


@pytest.fixture
async def bot(telegram: TelegramServer) -> AsyncIterator[TelegramChannel]:
    made = make(telegram)
    yield made
    await made.aclose()


def make(telegram: TelegramServer, **extra: Any) -> TelegramChannel:
    options = {
        "type": "telegram",
        "bot_token": telegram.fake.token,
        "chat_ids": [int(PRIVATE), int(GROUP)],
        "api_url": telegram.url,
        "timeout_s": 5,
        **extra,
    }
    made = channel("team", options)
    assert isinstance(made, TelegramChannel)
    return made


def message(chat: str = PRIVATE, *events: Any) -> Message:
    return Message("team", chat, tuple(events) or (event(),))


async def test_sends_html_with_a_link(bot: Channel, telegram: TelegramServer) -> None:
    result = await bot.send(message())
    assert isinstance(result, Delivered)
    (sent,) = telegram.fake.sent
    assert sent.chat_id == PRIVATE and sent.parse_mode == "HTML"
    assert "<b>Статус: В работе → Завершённая</b>" in sent.text
    assert 'href="https://acme.planfix.ru/task/401"' in sent.text


async def test_hostile_titles_are_accepted_by_telegram(
    bot: Channel, telegram: TelegramServer
) -> None:
    title = "<b>не жирный</b> & <a href='x'>не ссылка</a> 😀 שלום"
    result = await bot.send(message(PRIVATE, event(task=summary(title=title))))
    assert isinstance(result, Delivered), result
    assert telegram.fake.rejected == []


async def test_a_long_digest_goes_as_several_messages(
    bot: Channel, telegram: TelegramServer
) -> None:
    events = [
        event(task_id=1000 + i, task=summary(1000 + i, title="длинное название " * 15))
        for i in range(40)
    ]
    result = await bot.send(message(GROUP, *events))
    assert isinstance(result, Delivered)
    assert len(telegram.fake.sent) > 1 and telegram.fake.rejected == []


async def test_retry_after_is_honoured(bot: Channel, telegram: TelegramServer) -> None:
    telegram.fake.inject("retry_after", PRIVATE, retry_after=7)
    result = await bot.send(message())
    assert isinstance(result, RetryLater) and result.after_s == 7


async def test_blocked_bot_fails_for_good_and_is_remembered(
    bot: TelegramChannel, telegram: TelegramServer
) -> None:
    telegram.fake.inject("forbidden", PRIVATE)
    result = await bot.send(message())
    assert isinstance(result, FailedForGood) and "blocked" in result.reason
    assert PRIVATE in bot.forbidden
    assert isinstance(await bot.send(message()), Delivered)
    assert PRIVATE not in bot.forbidden


async def test_bad_request_fails_for_good(bot: Channel, telegram: TelegramServer) -> None:
    telegram.fake.inject("bad_request", GROUP)
    result = await bot.send(message(GROUP))
    assert isinstance(result, FailedForGood) and "chat not found" in result.reason.lower()


async def test_server_errors_are_retried(bot: Channel, telegram: TelegramServer) -> None:
    telegram.fake.inject("server_error", PRIVATE)
    assert isinstance(await bot.send(message()), RetryLater)


async def test_telegram_down_is_retried(telegram: TelegramServer) -> None:
    down = make(telegram, api_url="http://127.0.0.1:9")
    try:
        result = await down.send(message())
        assert isinstance(result, RetryLater)
    finally:
        await down.aclose()


async def test_a_migrated_group_is_followed(bot: TelegramChannel, telegram: TelegramServer) -> None:
    telegram.fake.inject("migrate", GROUP, migrate_to=-1009998887776)
    assert isinstance(await bot.send(message(GROUP)), Delivered)
    assert telegram.fake.texts(-1009998887776)
    assert isinstance(await bot.send(message(GROUP)), Delivered)
    assert len(telegram.fake.texts(-1009998887776)) == 2  # remembered


async def test_one_message_a_second_per_chat(bot: Channel, telegram: TelegramServer) -> None:
    telegram.fake.enforce_limits = True
    started = time.monotonic()
    for _ in range(3):
        assert isinstance(await bot.send(message()), Delivered)
    assert time.monotonic() - started >= 1.9
    assert telegram.fake.count_429() == 0


async def test_a_message_held_up_on_the_way_does_not_crowd_the_next(
    bot: Channel, telegram: TelegramServer
) -> None:
    """Pacing from when a send started let the next one arrive less than a
    second after one that was held up on the way (a busy machine, a slow
    network): 429 and a 40 s pause. The gap now counts from when Telegram
    answered, so no delay in transit can bring two arrivals closer."""
    telegram.fake.enforce_limits = True
    telegram.fake.inject("late", PRIVATE, delay_s=0.4, times=1)
    for _ in range(3):
        assert isinstance(await bot.send(message()), Delivered)
    assert telegram.fake.count_429() == 0


async def test_the_token_never_shows(telegram: TelegramServer) -> None:
    wrong = make(telegram, bot_token="999:WRONG-secret-token-value")
    try:
        result = await wrong.send(message())
        check = await wrong.check()
    finally:
        await wrong.aclose()
    assert isinstance(result, Misconfigured) and "channels.team.bot_token" in result.reason
    assert "WRONG-secret" not in result.reason + check.detail
    assert not check.ok


async def test_check_reaches_the_bot(bot: Channel) -> None:
    result = await bot.check()
    assert result.ok and "@planfix_test_bot" in result.detail


def test_plain_http_to_a_remote_host_is_refused() -> None:
    """The bot token is part of every Bot API URL."""
    base = {"type": "telegram", "bot_token": "1:x", "chat_ids": [1]}
    with pytest.raises(ValidationError, match="https"):
        TelegramOptions.model_validate({**base, "api_url": "http://bot-api.example.com"})
    for fine in ("https://bot-api.example.com", "http://127.0.0.1:8081", "http://localhost:8081"):
        TelegramOptions.model_validate({**base, "api_url": fine})


async def test_a_reload_keeps_counting_against_the_group_limit(telegram: TelegramServer) -> None:
    limits = {"per_chat_per_s": 100, "per_group_per_min": 2}
    before, after, fresh = (make(telegram, **limits) for _ in range(3))
    try:
        for _ in range(2):
            assert isinstance(await before.send(message(GROUP)), Delivered)
        after.carry_over(before)  # the reloaded channel of the same name
        with pytest.raises(TimeoutError):  # the third of the minute must wait
            await asyncio.wait_for(after.send(message(GROUP)), 1.0)
        assert isinstance(await fresh.send(message(GROUP)), Delivered)  # without it, at once
    finally:
        for made in (before, after, fresh):
            await made.aclose()
