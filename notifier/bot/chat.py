"""The Telegram bot: people subscribe to tasks from the chat.

The same bot token as the alert channel named by ``bot.channel`` takes
commands. python-telegram-bot's Application runs by hand inside the service's
event loop (initialize → start polling → start; no run_polling, no job queue:
APScheduler is the one scheduler). Only ``allowed_chats`` and ``admins`` may
subscribe; anyone else gets a polite refusal, and the attempt is logged.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from ..alerts.events import TASK_EVENT_KINDS
from ..ops import logging as oplog
from ..planfix.errors import PlanfixError, QuotaExhaustedError, is_task_gone
from ..planfix.model import Task
from ..watch.planner import polls_per_day_estimate
from .resolve import TaskRef, linked_account, parse_duration, parse_task

if TYPE_CHECKING:
    from ..app import Service
    from ..watch.account import AccountWatch

log = oplog.get(__name__)
DAY_S = 86400.0
HELP = """Команды:
/watch <номер | ссылка | id:ID> [события…] — следить за задачей в этом чате
/watch project <ID> — следить за всеми задачами проекта
/unwatch <задача> | /unwatch project <ID> — перестать
/list — задачи, за которыми следит этот чат
/mute <задача | all> <30m | 2h | 1d> — не присылать уведомления
/unmute [задача | all] — снова присылать
/status — квота PlanFix, последний опрос, очередь уведомлений
Где аккаунтов PlanFix несколько, задача — ссылкой на неё, или имя аккаунта первым словом:
/watch client2 418, /watch client2 project 12, /unwatch client2 418, /mute client2 418 2h,
/mute client2 1d (все задачи аккаунта)
События: """ + ", ".join(TASK_EVENT_KINDS)


def task_buttons(
    task_url: str | None, task_id: int, *, callbacks: bool, account: str = ""
) -> InlineKeyboardMarkup:
    """The buttons under an alert about one task (``account``: its name,
    where there are several; at most 32 characters, Telegram's 64 bytes allow)."""
    rows = []
    if task_url:
        rows.append([InlineKeyboardButton("Открыть в PlanFix", url=task_url)])
    if callbacks:
        of = f"@{account}" if account else ""
        rows.append(
            [
                InlineKeyboardButton("Тишина на день", callback_data=f"mute:{task_id}{of}"),
                InlineKeyboardButton("Не следить", callback_data=f"unwatch:{task_id}{of}"),
            ]
        )
    return InlineKeyboardMarkup(rows)


Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


class ChatBot:
    def __init__(self, service: Service) -> None:
        self.service = service
        options = service.config.bot
        self.allowed_chats = frozenset(options.allowed_chats)
        self.admins = frozenset(options.admins)
        channel = service.channels[options.channel]
        token = channel.options.bot_token.get_secret_value()  # type: ignore[attr-defined]
        api_url = channel.options.api_url.rstrip("/")  # type: ignore[attr-defined]
        self.poll_timeout_s = options.poll_timeout_s
        self.watch_per_hour = options.watch_per_hour
        self.max_subscriptions = options.max_subscriptions
        self._watches: dict[int, deque[float]] = {}  # chat → its recent /watch (monotonic)
        self.app = (
            Application.builder().token(token).base_url(f"{api_url}/bot").job_queue(None).build()
        )
        commands: dict[str, Handler] = {
            "start": self.start_command,
            "help": self.help_command,
            "watch": self.watch,
            "unwatch": self.unwatch,
            "list": self.list_command,
            "mute": self.mute_command,
            "unmute": self.unmute_command,
            "status": self.status,
        }
        for name, handler in commands.items():
            self.app.add_handler(CommandHandler(name, handler))
        self.app.add_handler(CallbackQueryHandler(self.button))

    # --- running ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.app.initialize()
        assert self.app.updater is not None
        await self.app.updater.start_polling(
            timeout=int(self.poll_timeout_s), allowed_updates=["message", "callback_query"]
        )
        await self.app.start()

    async def stop(self) -> None:
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    # --- who may ---------------------------------------------------------------------------

    def admin(self, update: Update) -> bool:
        user = update.effective_user
        return user is not None and user.id in self.admins

    def allowed(self, update: Update) -> bool:
        chat = update.effective_chat
        return self.admin(update) or (chat is not None and chat.id in self.allowed_chats)

    async def refuse(self, update: Update) -> None:
        chat, user = update.effective_chat, update.effective_user
        log.warning(
            "refused a stranger",
            chat_id=chat.id if chat else None,
            user_id=user.id if user else None,
        )
        await self.reply(
            update,
            "Извините, этот чат не может управлять уведомлениями. Попросите администратора "
            f"добавить его в bot.allowed_chats (chat id: {chat.id if chat else '?'}).",
        )

    async def reply(self, update: Update, text: str, **kwargs: Any) -> None:
        if update.effective_message is not None:
            await update.effective_message.reply_text(text, **kwargs)

    # --- accounts and tasks -------------------------------------------------------------------

    def which(self, args: list[str]) -> tuple[AccountWatch, list[str]] | str:
        """The account a command is about, and its other words: named by its
        first word, or by a task's link; the only one when there is one.
        Else what to ask the user."""
        watches = self.service.watches
        if args and args[0] in watches:
            return watches[args[0]], args[1:]
        if len(watches) == 1:
            return self.service.main, args
        linked = linked_account(args[:1], (w.account for w in watches.values()))
        if linked is not None:
            return watches[linked.name], args
        return (
            "В каком аккаунте PlanFix? Пришлите ссылку на задачу или напишите имя аккаунта "
            f"первым словом после команды, например: {next(iter(watches))} 418. "
            f"Аккаунты: {', '.join(watches)}."
        )

    def of(self, watch: AccountWatch) -> str:
        """The account, named where there are several."""
        return f"[{watch.name}] " if len(self.service.watches) > 1 else ""

    async def fetch(self, watch: AccountWatch, ref: TaskRef) -> Task | str:
        """The task, asked from the quota reserve; or what to tell the user."""
        try:
            with watch.ledger.on_demand():
                await watch.poller.refresh_catalog()  # status names (cached for hours)
                if ref.is_id:
                    return await watch.client.get_task(ref.value)
                return await watch.client.get_task_by_number(ref.value)
        except QuotaExhaustedError as exc:
            return f"Сейчас нельзя спросить PlanFix: {exc.message}. Попробуйте позже."
        except PlanfixError as exc:
            if is_task_gone(exc):
                return "Не нашёл такую задачу (или у робота нет к ней доступа)."
            return f"PlanFix сейчас не ответил: {exc.message}. Попробуйте позже."

    def known(self, watch: AccountWatch, ref: TaskRef) -> int | None:
        """A task id from what the service already knows, without asking PlanFix."""
        if ref.is_id:
            return ref.value
        for record in watch.poller.records.values():
            if record.card is not None and record.card.general == ref.value:
                return record.task_id
        return None

    def every(self, watch: AccountWatch, task_id: int) -> str:
        poller = watch.poller
        record = poller.records.get(task_id)
        if record is None:
            return "?"
        views = [poller.view(r) for r in poller.records.values()]
        per_day = polls_per_day_estimate(
            views, poller.ledger.daily_plannable, poller.settings, time.time()
        ).get(task_id)
        if not per_day:
            return "редко"
        seconds = max(poller.settings.min_interval_s, DAY_S / per_day)
        if seconds < 120:
            return f"{seconds:.0f} с"
        return f"{seconds / 60:.0f} мин" if seconds < 7200 else f"{seconds / 3600:.0f} ч"

    def describe(self, watch: AccountWatch, task: Task) -> str:
        catalog = watch.poller.catalog
        status = catalog.name(task.status, task.status_set) or str(task.status)
        deadline = task.deadline.strftime("%d.%m %H:%M") if task.deadline else "без срока"
        return f"#{task.general} «{task.title}» — {status}, срок: {deadline}"

    # --- commands ------------------------------------------------------------------------------

    async def start_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat = update.effective_chat
        greeting = (
            "Здравствуйте! Я присылаю уведомления о задачах PlanFix: смена статуса, "
            f"просрочка, приближение срока.\nChat id этого чата: {chat.id if chat else '?'}\n\n"
        )
        if not self.allowed(update):
            greeting += "Этот чат пока не может подписываться — попросите администратора.\n\n"
        await self.reply(update, greeting + HELP)

    async def help_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await self.reply(update, HELP)

    async def watch(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        found_account = self.which(context.args or [])
        if isinstance(found_account, str):
            return await self.reply(update, found_account)
        watch, args = found_account
        project = _project_id(args)
        if project is not None:
            return await self.watch_project(update, watch, project)
        ref = parse_task(args[0]) if args else None
        if ref is None:
            return await self.reply(update, "Напишите: /watch 418 (номер, ссылка или id:1001)")
        events = args[1:]
        unknown = [e for e in events if e not in TASK_EVENT_KINDS]
        if unknown:
            return await self.reply(update, f"Не знаю событий: {', '.join(unknown)}.\n{HELP}")
        assert update.effective_chat is not None
        refusal = None if self.admin(update) else await self.over_limits(update.effective_chat.id)
        if refusal is not None:
            return await self.reply(update, refusal)
        asked_at = self.service.clock()
        found = await self.fetch(watch, ref)
        if isinstance(found, str):
            return await self.reply(update, found)
        user = update.effective_user
        await watch.store.subscribe(
            update.effective_chat.id,
            found.id,
            events or None,
            user.id if user else None,
            time.time(),
        )
        watched_before = found.id in watch.poller.records
        await watch.poller.reload_watch_set()
        if watch.polls:  # (else the instance polling follows the store, and reads it)
            if not watched_before:  # a baseline, whatever was stored from an earlier watch
                watch.poller.forget(found.id)
            await watch.poller.ingest(found, asked_at)  # the baseline: no second request
            self.service.wake(watch)
        await self.reply(
            update,
            f"Слежу: {self.of(watch)}{self.describe(watch, found)}.\n"
            f"Проверяется примерно каждые {self.every(watch, found.id)}.",
        )

    async def watch_project(self, update: Update, watch: AccountWatch, project_id: int) -> None:
        """Every task of a project, as the config's ``watch.projects`` does:
        its members are read at once, and new ones join as they appear."""
        chat, user = update.effective_chat, update.effective_user
        assert chat is not None
        refusal = None if self.admin(update) else await self.over_limits(chat.id)
        if refusal is not None:
            return await self.reply(update, refusal)
        by = user.id if user else None
        await watch.store.subscribe_project(chat.id, project_id, by, time.time())
        await watch.sets.projects_changed()
        self.service.wake(watch)
        await self.reply(
            update,
            f"Слежу за всеми задачами: {self.of(watch)}проект {project_id}. Уведомления о задачах "
            "проекта "
            "придут сюда; новые задачи проекта добавятся сами.",
        )

    async def over_limits(self, chat_id: int) -> str | None:
        """Each /watch reads PlanFix from the day's small reserve: a chat may
        watch ``max_subscriptions`` tasks and ask ``watch_per_hour`` times."""
        watching = [await w.store.subscriptions(chat_id) for w in self.service.watches.values()]
        if sum(map(len, watching)) >= self.max_subscriptions:
            return (
                f"Этот чат уже следит за {self.max_subscriptions} задачами — это предел "
                "(bot.max_subscriptions). Уберите ненужные: /list, /unwatch."
            )
        now = time.monotonic()
        recent = self._watches.setdefault(chat_id, deque())
        while recent and recent[0] < now - 3600:
            recent.popleft()
        if len(recent) >= self.watch_per_hour:
            minutes = int((recent[0] + 3600 - now) / 60) + 1
            return (
                f"Слишком часто: не больше {self.watch_per_hour} /watch в час в этом чате "
                f"(bot.watch_per_hour). Попробуйте через {minutes} мин."
            )
        recent.append(now)
        return None

    async def unwatch(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        found_account = self.which(context.args or [])
        if isinstance(found_account, str):
            return await self.reply(update, found_account)
        watch, args = found_account
        chat = update.effective_chat
        assert chat is not None
        project = _project_id(args)
        if project is not None:
            if not await watch.store.unsubscribe_project(chat.id, project):
                return await self.reply(update, "Этот чат не следит за таким проектом.")
            await watch.sets.projects_changed()
            self.service.wake(watch)
            return await self.reply(update, f"Больше не слежу за проектом {project} здесь.")
        ref = parse_task(args[0]) if args else None
        target = chat.id
        if len(args) > 1 and self.admin(update) and args[1].lstrip("-").isdigit():
            target = int(args[1])  # admins manage any chat's subscriptions
        task_id = self.known(watch, ref) if ref else None
        if task_id is None or not await watch.store.unsubscribe(target, task_id):
            return await self.reply(update, "Этот чат не следит за такой задачей.")
        await watch.poller.reload_watch_set()
        await self.reply(update, "Больше не слежу за этой задачей здесь.")

    async def list_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        chat = update.effective_chat
        assert chat is not None
        everyone = self.admin(update)
        lines = []
        for watch in self.service.watches.values():
            lines += await self.listed(watch, None if everyone else chat.id)
        if not lines:
            return await self.reply(update, "Пока ни одной задачи. /watch 418 — начать.")
        await self.reply(update, "\n".join(lines))

    async def listed(self, watch: AccountWatch, chat_id: int | None) -> list[str]:
        """A chat's subscriptions in one account (None: everyone's), a line each."""
        of = self.of(watch)
        subscriptions = await watch.store.subscriptions(chat_id)
        projects = await watch.store.subscribed_projects(chat_id)
        lines = [f"• {of}все задачи: проект {project}" for project in projects]
        now = time.time()
        for sub in subscriptions:
            record = watch.poller.records.get(sub.task_id)
            known = record is not None and record.card is not None
            card = await watch.store.load_card(sub.task_id) if known else None
            text = self.describe(watch, card) if card else f"id {sub.task_id}"
            if sub.muted_until and sub.muted_until > now:
                muted = datetime.fromtimestamp(sub.muted_until).strftime("%d.%m %H:%M")
                text += f" (тишина до {muted})"
            where = f"[{sub.chat_id}] " if chat_id is None else ""
            every = self.every(watch, sub.task_id)
            lines.append(f"• {where}{of}{text}; проверка ≈ каждые {every}")
        return lines

    async def mute_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        args = context.args or []
        duration = parse_duration(args[-1]) if len(args) in (2, 3) else None
        if duration is None:
            return await self.reply(update, "Напишите: /mute 418 2h или /mute all 1d")
        await self._mute(update, args[:-1], time.time() + duration)

    async def unmute_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        await self._mute(update, context.args or ["all"], None)

    async def _mute(self, update: Update, what: list[str], until: float | None) -> None:
        """``what``: a task (in an account, where there are several), or ``all``
        (of one account: ``NAME all``, or ``NAME`` alone)."""
        chat = update.effective_chat
        assert chat is not None
        if len(what) == 1 and what[0] in self.service.watches:
            what = [what[0], "all"]
        if what[-1:] == ["all"]:  # (every account's, unless one is named)
            watches = list(self.service.watches.values())
            if len(what) == 2:
                if what[0] not in self.service.watches:
                    known = ", ".join(self.service.watches)
                    return await self.reply(update, f"Нет аккаунта {what[0]}. Аккаунты: {known}.")
                watches = [self.service.watches[what[0]]]
            changed = sum([await w.store.mute(chat.id, None, until) for w in watches])
        else:
            found_account = self.which(what)
            if isinstance(found_account, str):
                return await self.reply(update, found_account)
            watch, args = found_account
            ref = parse_task(args[0]) if args else None
            task_id = self.known(watch, ref) if ref else None
            if task_id is None:
                return await self.reply(update, "Этот чат не следит за такой задачей.")
            changed = await watch.store.mute(chat.id, task_id, until)
        if not changed:
            return await self.reply(update, "Этот чат ни за чем не следит.")
        if until is None:
            return await self.reply(update, "Уведомления снова включены.")
        when = datetime.fromtimestamp(until).strftime("%d.%m %H:%M")
        await self.reply(update, f"Тишина до {when}.")

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.allowed(update):
            return await self.refuse(update)
        service = self.service
        zone = service.tz

        def at(ts: float, fmt: str = "%H:%M:%S %Z") -> str:  # in the account's zone, labelled
            return datetime.fromtimestamp(ts, zone).strftime(fmt)

        healthy, why = service.health()
        lines = ["Состояние: в порядке." if healthy else f"Состояние: НЕ в порядке — {why}."]
        for watch in service.watches.values():
            lines += await self.account_status(watch, at)
        backlog = await service.store.outbox_by_channel()
        if not backlog:
            lines.append("Очередь уведомлений пуста.")
        for c in backlog:
            oldest = f" (самое старое с {at(c.oldest_pending_at)})" if c.oldest_pending_at else ""
            error = f"; последняя ошибка: {c.last_error}" if c.last_error else ""
            lines.append(f"Канал {c.channel}: ждут {c.pending}{oldest}, "
                         f"не доставлено {c.dead}{error}.")  # fmt: skip
        await self.reply(update, "\n".join(lines))

    async def account_status(self, watch: AccountWatch, at: Callable[..., str]) -> list[str]:
        """One account's quota, last poll (or who polls it) and watched tasks."""
        ledger, of = watch.ledger, self.of(watch)
        last = watch.poller.last_success_at
        day = ledger.today()  # as every instance counted it (the store), shown, not taken
        used = (await watch.store.load_quota(day.day) or day).used
        left = max(0, min(ledger.remaining, ledger.daily_quota - used))
        lines = [
            f"{of}Квота PlanFix: {used} из {ledger.daily_quota} за сегодня, "
            f"осталось {left}; сброс {at(ledger.resets_at, '%d.%m %H:%M %Z')}."
        ]
        if watch.polls:
            lines.append(f"{of}Последний удачный опрос: {at(last) if last else 'ещё не было'}.")
        else:
            holder = await self.service.lease_holder(watch.poll_lease)
            lines.append(f"{of}Опрашивает PlanFix другой экземпляр: {holder}.")
        lines.append(f"{of}Задач под наблюдением: {len(await watch.store.watched_ids())}.")
        return lines

    # --- buttons under alerts -----------------------------------------------------------------

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        if not self.allowed(update):
            await query.answer("Этот чат не может управлять уведомлениями.", show_alert=True)
            await self.refuse(update)
            return
        action, _, target = (query.data or "").partition(":")
        raw_id, _, account = target.partition("@")  # (no @: the first account, as before)
        chat = update.effective_chat
        watch = self.service.watches.get(account) if account else self.service.main
        if chat is None or not raw_id.isdigit() or watch is None:
            await query.answer()
            return
        task_id = int(raw_id)
        if action == "mute":
            await watch.store.mute(chat.id, task_id, time.time() + DAY_S)
            await query.answer("Тишина на сутки.")
        elif action == "unwatch":
            await watch.store.unsubscribe(chat.id, task_id)
            await watch.poller.reload_watch_set()
            await query.answer("Больше не слежу за этой задачей здесь.")
        else:
            await query.answer()


def _project_id(args: list[str]) -> int | None:
    """``project 12`` (or ``проект 12``) in a command's arguments."""
    if len(args) == 2 and args[0].lower() in ("project", "проект") and args[1].isdigit():
        return int(args[1])
    return None
