"""Events → words people read, through Jinja2 templates (``ru`` and ``en``,
overridable from a directory). HTML layouts autoescape everything a task
carries; the headline is rendered as plain text first, so no template can
smuggle task text past the escaping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from .events import Event, EventKind, TaskSummary

TITLE_LIMIT = 300  # a title longer than this is cut (with …) in messages
LOCALES = ("ru", "en")
_IMPORTANCE = {
    "ru": {"AVERAGE": "обычная", "HIGH": "высокая"},
    "en": {"AVERAGE": "normal", "HIGH": "high"},
}


@dataclass(frozen=True, slots=True)
class Item:
    """One event as the layouts see it."""

    event: Event
    headline: str
    task: TaskSummary | None
    number: str
    title: str
    url: str | None
    workers: str
    deadline: str | None
    account: str = ""  # its account's name, where the service watches several


@dataclass(frozen=True, slots=True)
class EmailParts:
    subject: str
    text: str
    html: str


# Control characters, and the explicit bidi embeddings, overrides and isolates:
# right-to-left text shows right without them, and with them a title could
# turn the rest of the alert's line around ("Trojan Source").
_UNSAFE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def one_line(text: str) -> str:
    """No CR/LF (or other line breaks) can ever reach a header or a one-liner,
    nor a control character that would change how the rest of it reads."""
    return " ".join(_UNSAFE.sub("", text).split())


def format_when(value: datetime | None, has_time: bool, tz: ZoneInfo) -> str | None:
    if value is None:
        return None
    local = value.astimezone(tz)
    return local.strftime("%d.%m %H:%M" if has_time else "%d.%m")


class Renderer:
    def __init__(
        self,
        *,
        locale: str = "ru",
        timezone: str = "Europe/Moscow",
        task_url: str | None = "https://{account}.planfix.ru/task/{general}",
        account: str = "",
        template_dir: Path | None = None,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        """``accounts``: where the service watches several, each one's name →
        its PlanFix account (ACC of ACC.planfix.ru, for links); messages
        then name the account."""
        if locale not in LOCALES:
            raise ValueError(f"locale {locale!r}: one of {', '.join(LOCALES)}")
        self.locale = locale
        self.tz = ZoneInfo(timezone)
        self.task_url = task_url
        self.account = account
        self.accounts = dict(accounts or {})
        loaders: list[jinja2.BaseLoader] = []
        if template_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(template_dir)))
        loaders.append(jinja2.PackageLoader("notifier.alerts", "templates"))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
            keep_trailing_newline=False,
        )
        self.env.globals["importance"] = self._importance
        self.env.filters["events"] = self._events_word

    def _events_word(self, count: int) -> str:
        if self.locale == "en":
            return f"{count} event" + ("" if count == 1 else "s")
        tens, units = count % 100, count % 10
        if units == 1 and tens != 11:
            word = "событие"
        elif 2 <= units <= 4 and not 12 <= tens <= 14:
            word = "события"
        else:
            word = "событий"
        return f"{count} {word}"

    def _importance(self, value: str | None) -> str:
        return _IMPORTANCE[self.locale].get(value or "", value or "—")

    def _template(self, name: str) -> jinja2.Template:
        return self.env.get_template(f"{self.locale}/{name}")

    def url(self, task: TaskSummary, account: str = "") -> str | None:
        if not self.task_url or task.general is None:
            return None
        planfix = self.accounts.get(account, self.account)
        return self.task_url.format(account=planfix, general=task.general, id=task.id)

    def item(self, event: Event) -> Item:
        task = event.task
        deadline = format_when(task.deadline, task.deadline_has_time, self.tz) if task else None
        headline = one_line(self._template("headline.txt.j2").render(e=event, deadline=deadline))
        account = event.account if self.accounts else ""
        if task is None:
            number = str(event.task_id or "")
            return Item(event, headline, None, number, "", None, "", None, account)
        title = one_line(task.title)
        if len(title) > TITLE_LIMIT:
            title = title[: TITLE_LIMIT - 1] + "…"
        # (a sample, as test-alert sends, is task 0: no number to show)
        number = (
            str(task.general) if task.general is not None else f"id{task.id}" if task.id else ""
        )
        workers = one_line(", ".join(task.workers))[:TITLE_LIMIT]
        url = self.url(task, event.account)
        return Item(event, headline, task, number, title, url, workers, deadline, account)

    def _render(self, name: str, events: Sequence[Event]) -> str:
        return self._template(name).render(items=[self.item(e) for e in events]).strip()

    def text(self, events: Sequence[Event]) -> str:
        return self._render("message.txt.j2", events)

    def telegram(self, events: Sequence[Event]) -> str:
        return self._render("telegram.html.j2", events)

    def telegram_parts(self, events: Sequence[Event], limit: int = 4096) -> list[str]:
        """The message, or a digest cut into messages of at most ``limit``
        between events; only a single event too long on its own is split."""
        return [text for text, _ in self.telegram_chunks(events, limit)]

    def telegram_chunks(self, events: Sequence[Event], limit: int = 4096) -> list[tuple[str, int]]:
        """The parts of :meth:`telegram_parts`, each with how many of the
        events (from the first) are complete once it is sent — so that a
        digest cut short by a failure records what did go out."""
        whole = self.telegram(events)
        if telegram_length(whole) <= limit or len(events) == 1:
            pieces = split_html(whole, limit)
            return [(p, len(events) if i == len(pieces) - 1 else 0) for i, p in enumerate(pieces)]
        chunks: list[tuple[str, int]] = []
        for done, block in enumerate((self.telegram([e]) for e in events), start=1):
            candidate = f"{chunks[-1][0]}\n\n{block}" if chunks else block
            if chunks and telegram_length(candidate) <= limit:
                chunks[-1] = (candidate, done)
            else:
                pieces = split_html(block, limit)
                last = len(pieces) - 1
                chunks += [(p, done if i == last else done - 1) for i, p in enumerate(pieces)]
        return chunks

    def email(self, events: Sequence[Event]) -> EmailParts:
        subject = one_line(self._render("subject.txt.j2", events))[:200]
        return EmailParts(subject, self.text(events), self._render("email.html.j2", events))

    def check(self) -> None:
        """Compile every template of the locale and render a sample event of
        each kind through every output, so that an override that cannot work
        is refused when the config is loaded, not found by every alert later.
        Raises TemplateProblem naming the file and the line."""
        name = "?"
        try:
            for name in TEMPLATES:
                self._template(name)
            for event in sample_events():
                for name in TEMPLATES[1:]:  # each renders the headline of its items
                    self._render(name, [event])
            name = "a digest of every kind"
            self.telegram_parts(sample_events())
            self.email(sample_events())
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or f"{self.locale}/{exc.name or name}"
            raise TemplateProblem(f"{where}:{exc.lineno}: {exc.message}") from None
        except Exception as exc:  # any failure of a user's template
            line = _template_line(exc)
            raise TemplateProblem(
                f"{self._where(name)}{line}: cannot render a sample alert "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def _where(self, name: str) -> str:
        try:
            return self._template(name).filename or f"{self.locale}/{name}"
        except jinja2.TemplateError:
            return f"{self.locale}/{name}"


class TemplateProblem(ValueError):
    """A template that does not compile or cannot render; the text names the
    file and the line."""


TEMPLATES = (
    "headline.txt.j2", "message.txt.j2", "telegram.html.j2", "subject.txt.j2", "email.html.j2",
)  # fmt: skip


def _template_line(exc: BaseException) -> str:
    """The line of the template the exception was raised in, when Jinja2 says."""
    tb = exc.__traceback__
    found = ""
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            found = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def sample_events() -> list[Event]:
    """One event of every kind, with the details the real ones carry."""
    task = TaskSummary(
        1, 418, "Образец: подготовить отчёт", 2, "В работе", "HIGH", "Образец",
        ("Иван Петров",), datetime(2000, 1, 1, 18, 0, tzinfo=UTC), True,
    )  # fmt: skip
    at = datetime(2000, 1, 1, 12, 0, tzinfo=UTC)
    details: dict[str, object] = {
        "reminder": False, "code": "3001", "error": "HTTP 502", "error_class": "transient",
        "since": at.isoformat(), "resets_at": at.isoformat(), "resets_at_local": "01.01 00:00",
        "reason": "a sample", "channel": "team", "recipient": "-100", "test": True,
    }  # fmt: skip
    events = []
    for kind in EventKind:
        about, summary = (None, None) if kind.operator else (1, task)
        events.append(Event(kind, at, about, summary, "Новая", "В работе", dict(details)))
    return events


# --- splitting HTML for Telegram -------------------------------------------------------

_TOKEN = re.compile(r"<[^>]*>|&[#\w]+;|[^<&]+|[<&]")
_TAG = re.compile(r"<(/?)([a-zA-Z0-9-]+)")


def telegram_length(text: str) -> int:
    """Telegram counts UTF-16 code units; markup counts too here, to be safe."""
    return len(text.encode("utf-16-le")) // 2


def split_html(html: str, limit: int = 4096) -> list[str]:
    """Cut ``html`` into parts of at most ``limit`` (UTF-16 units), never inside
    a tag or an entity: open tags are closed at a cut and reopened after it.
    Cuts fall between words where it can."""
    if telegram_length(html) <= limit:
        return [html]
    parts: list[str] = []
    current: list[str] = []
    size = 0
    stack: list[tuple[str, str]] = []  # (name, opening tag) of the open elements

    def closing() -> str:
        return "".join(f"</{name}>" for name, _ in reversed(stack))

    def flush() -> None:
        nonlocal current, size
        text = "".join(current) + closing()
        if text.strip():
            parts.append(text)
        reopened = "".join(tag for _, tag in stack)
        current, size = [reopened], telegram_length(reopened)

    for token in _pieces(html, limit // 4):
        is_tag = token.startswith("<") and token.endswith(">") and len(token) > 1
        need = telegram_length(token) + telegram_length(closing())
        if is_tag and token.startswith("</"):
            need = telegram_length(token)
        if size + need > limit and size > telegram_length("".join(t for _, t in stack)):
            flush()
        current.append(token)
        size += telegram_length(token)
        if is_tag:
            match = _TAG.match(token)
            if match and not token.endswith("/>"):
                closing_tag, name = match.group(1), match.group(2).lower()
                if closing_tag:
                    for index in range(len(stack) - 1, -1, -1):
                        if stack[index][0] == name:
                            del stack[index]
                            break
                else:
                    stack.append((name, token))
    flush()
    return parts


def _pieces(html: str, longest: int) -> list[str]:
    """Tokens (tags, entities, words with their spaces) no longer than ``longest``
    — except a tag, which is never cut."""
    pieces: list[str] = []
    for token in _TOKEN.findall(html):
        if token.startswith(("<", "&")) and len(token) > 1:
            pieces.append(token)
            continue
        for word in re.findall(r"\S+\s*|\s+", token):
            pieces.extend(word[i : i + longest] for i in range(0, len(word), longest))
    return pieces
