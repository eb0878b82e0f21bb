"""Telegram, through python-telegram-bot 22.

HTML parse mode with every piece of task text escaped by the templates; long
messages split under 4096 characters between events (or, for one huge
event, between words, never inside a tag or an entity). Limits: PTB's
AIORateLimiter keeps 30 messages/s overall. It does not pace private chats,
and paces groups as a leaky bucket (a burst of 20, then one every 3 s), which
can overrun "20 in any minute"; so every chat is paced here (ratelimit.Pacer):
1 message/s, and 20 in any minute for groups and channels, counted from when
each send finished, so that a message held up on the way never crowds the next.
``RetryAfter`` is honoured; ``Forbidden`` (blocked, removed) and
``BadRequest`` fail for good; ``ChatMigrated`` is followed to the new id.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from datetime import timedelta
from typing import Any, Literal

import httpx
from pydantic import SecretStr, field_validator
from telegram import InlineKeyboardMarkup, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

from ..bot.chat import task_buttons
from ..ops.errors import described
from ..planfix.client import private_transport
from .base import (
    Channel,
    ChannelOptions,
    CheckResult,
    Delivered,
    FailedForGood,
    Message,
    Misconfigured,
    RetryLater,
    SendResult,
)
from .ratelimit import Pacer

TELEGRAM_LIMIT = 4096
# PTB 22 warns, every time a RetryAfter is built, that retry_after becomes a
# timedelta one day; _retry_after_s() takes either.
warnings.filterwarnings("ignore", message=".*retry_after.*", category=PTBDeprecationWarning)


class TelegramOptions(ChannelOptions):
    type: Literal["telegram"] = "telegram"
    bot_token: SecretStr
    chat_ids: list[int | str]  # numeric ids, or "@channelname"
    api_url: str = "https://api.telegram.org"  # a local Bot API server, or a fake in tests
    timeout_s: float = 30.0
    per_chat_per_s: float = 1.0
    per_group_per_min: float = 20.0
    overall_per_s: float = 30.0

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if private_transport(value):
            return value
        raise ValueError(
            "must be https:// (http:// only to a loopback host): the bot token is part of every URL"
        )


def _retry_after_s(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramChannel(Channel):
    Options = TelegramOptions
    max_length = TELEGRAM_LIMIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        assert isinstance(self.options, TelegramOptions)
        self.opts: TelegramOptions = self.options
        self._token = self.opts.bot_token.get_secret_value()
        timeout = self.opts.timeout_s
        self.bot: ExtBot[Any] = ExtBot(
            token=self._token,
            base_url=f"{self.opts.api_url.rstrip('/')}/bot",
            request=HTTPXRequest(
                connection_pool_size=64,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
            ),
            rate_limiter=AIORateLimiter(
                overall_max_rate=self.opts.overall_per_s,
                group_max_rate=0,  # paced below, more strictly
                max_retries=0,  # a RetryAfter comes back to us: the outbox reschedules
            ),
        )
        self._ready = False
        self._per_chat: dict[str, Pacer] = {}
        self.callback_buttons = False  # set for the channel whose bot takes commands
        self.migrated: dict[str, str] = {}  # old chat id → new (ChatMigrated)
        self.forbidden: dict[str, str] = {}  # chat id → why Telegram refuses it

    def recipients(self) -> list[str]:
        return [str(chat) for chat in self.opts.chat_ids]

    def _pacer(self, chat: str) -> Pacer:
        if chat not in self._per_chat:
            gap = 1.0 / self.opts.per_chat_per_s
            if chat.startswith(("-", "@")):  # groups, supergroups and channels
                self._per_chat[chat] = Pacer(gap, int(self.opts.per_group_per_min), 60.0)
            else:
                self._per_chat[chat] = Pacer(gap)
        return self._per_chat[chat]

    def carry_over(self, previous: Channel) -> None:
        # Telegram counts per bot and chat: a reload must not start the count afresh.
        if not isinstance(previous, TelegramChannel) or previous._token != self._token:
            return
        limits = ("per_chat_per_s", "per_group_per_min")
        if all(getattr(previous.opts, k) == getattr(self.opts, k) for k in limits):
            self._per_chat = previous._per_chat
        self.migrated = {**previous.migrated, **self.migrated}
        self.forbidden = {**previous.forbidden, **self.forbidden}

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***")

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self.bot.initialize()  # getMe: fails early on a bad token
            self._ready = True

    async def send(self, message: Message) -> SendResult:
        chat = self.migrated.get(message.recipient, message.recipient)
        parts = self.renderer.telegram_chunks(message.events, TELEGRAM_LIMIT)
        markup = self._buttons(message)
        done = 0  # events complete in the parts sent so far: a retry starts after them
        try:
            await self._ensure_ready()
            for index, (part, complete) in enumerate(parts):
                last = index == len(parts) - 1
                chat = await self._send_part(
                    chat, part, message.recipient, markup if last else None
                )
                done = complete
        except RetryAfter as exc:
            return RetryLater("Telegram asked to slow down", _retry_after_s(exc), done)
        except Forbidden as exc:
            reason = f"the bot cannot write to chat {chat}: {self._scrub(exc.message)}"
            self.forbidden[message.recipient] = reason
            return FailedForGood(reason, done)
        except InvalidToken:
            return Misconfigured(
                "Telegram refuses the bot token (401); a configuration error: check "
                f"channels.{self.name}.bot_token",
                done,
            )
        except BadRequest as exc:
            reason = f"Telegram refused the message: {self._scrub(exc.message)}"
            return FailedForGood(reason, done)
        except (TimedOut, TelegramError) as exc:  # network trouble, 5xx
            return RetryLater(f"Telegram unreachable: {self._scrub(exc.message)}", None, done)
        self.forbidden.pop(message.recipient, None)
        return Delivered(f"{len(parts)} message(s)")

    def _buttons(self, message: Message) -> InlineKeyboardMarkup | None:
        """Under an alert about one task: open it; with the bot, mute or stop."""
        tasks = {(e.account, e.task_id) for e in message.events if e.task_id is not None}
        summaries = [e.task for e in message.events if e.task is not None]
        if len(tasks) != 1 or not summaries:
            return None
        account, task_id = tasks.pop()
        url = self.renderer.url(summaries[0], account)
        if url is None and not self.callback_buttons:
            return None
        several = bool(self.renderer.accounts)  # (one account: buttons as before accounts)
        return task_buttons(
            url, task_id, callbacks=self.callback_buttons, account=account if several else ""
        )

    async def _send_part(
        self, chat: str, text: str, recipient: str, markup: InlineKeyboardMarkup | None = None
    ) -> str:
        """Send one part; return the chat id it went to (after a migration)."""
        for _ in range(2):  # once more after a ChatMigrated
            try:
                async with self._pacer(chat).turn():
                    await self.bot.send_message(
                        chat_id=chat,
                        text=text,
                        parse_mode=ParseMode.HTML,
                        link_preview_options=LinkPreviewOptions(is_disabled=True),
                        reply_markup=markup,
                    )
                return chat
            except ChatMigrated as exc:
                new = str(exc.new_chat_id)
                self.migrated[recipient] = new
                chat = new
        raise BadRequest(f"chat {recipient} keeps migrating")

    async def check(self) -> CheckResult:
        try:
            started = time.monotonic()
            me = await asyncio.wait_for(self.bot.get_me(), self.opts.timeout_s)
        except (TelegramError, TimeoutError) as exc:
            host = httpx.URL(self.opts.api_url).host
            return CheckResult(False, f"getMe at {host} failed: {self._scrub(str(exc))}")
        took = time.monotonic() - started
        unreachable = []
        for chat_id in self.recipients():  # each chat the bot must write to
            try:
                await asyncio.wait_for(self.bot.get_chat(chat_id), self.opts.timeout_s)
            except (TelegramError, TimeoutError) as exc:
                why = self._scrub(str(exc)) or type(exc).__name__
                unreachable.append(f"chat {chat_id}: {why} (is the bot a member of it?)")
            except Exception as exc:  # an answer PTB cannot read: said, not a traceback
                unreachable.append(f"chat {chat_id}: {self._scrub(described(exc))}")
        if unreachable:
            return CheckResult(False, f"bot @{me.username} reachable; " + "; ".join(unreachable))
        chats = len(self.recipients())
        return CheckResult(
            True, f"bot @{me.username} reachable ({took * 1000:.0f} ms), {chats} chats found"
        )

    async def aclose(self) -> None:
        if self._ready:
            await self.bot.shutdown()
