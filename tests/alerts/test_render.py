"""Messages people read: words, escaping, length limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.alerts.events import EventKind
from notifier.alerts.render import one_line, split_html, telegram_length
from tests.alerts.samples import event, renderer, summary
from tests.fakes.telegram import check_html

HOSTILE = (
    'Отчёт <script>alert("x")</script> & <b>жирный</b> *markdown* _x_ \r\nBcc: evil@example.com'
)


def test_status_change_in_words() -> None:
    text = renderer().text([event()])
    assert text == (
        "#401 «Подготовить отчёт по продажам»: Статус: В работе → Завершённая "
        "https://acme.planfix.ru/task/401"
    )


def test_overdue_in_words_ru_and_en() -> None:
    overdue = event(EventKind.BECAME_OVERDUE, old=None, new=None)
    assert "Просрочена: срок был 21.11 18:00" in renderer().text([overdue])
    assert "Overdue: the deadline was 21.11 18:00" in renderer(locale="en").text([overdue])


def test_every_event_kind_has_words() -> None:
    for kind in EventKind:
        for locale in ("ru", "en"):
            text = renderer(locale=locale).text(
                [event(kind, details={"code": "3001", "error": "x", "channel": "c"})]
            )
            assert kind.value not in text, f"{kind} has no {locale} headline"


def test_telegram_escapes_task_text() -> None:
    html = renderer().telegram([event(task=summary(title=HOSTILE, project="<i>P</i>"))])
    check_html(html)  # Telegram would accept it
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "&lt;b&gt;жирный&lt;/b&gt;" in html
    assert '<a href="https://acme.planfix.ru/task/401">#401</a>' in html


def test_long_title_is_cut() -> None:
    html = renderer().telegram([event(task=summary(title="Я" * 100_000))])
    assert telegram_length(html) < 1000 and "…" in html


def test_a_digest_is_split_between_events_under_the_limit() -> None:
    events = [
        event(task_id=1000 + i, task=summary(1000 + i, title=f"Задача {i} " + "слово " * 40))
        for i in range(60)
    ]
    parts = renderer().telegram_parts(events)
    assert len(parts) > 1
    for part in parts:
        assert telegram_length(part) <= 4096
        check_html(part)
    joined = "\n\n".join(parts)
    for i in range(60):
        assert f"Задача {i} " in joined


def test_one_huge_block_is_split_without_breaking_tags_or_entities() -> None:
    html = "<b>" + ("слово &amp; &lt;тег&gt; " * 900) + "</b> <i>" + "ё" * 5000 + "</i>"
    parts = split_html(html, 4096)
    assert len(parts) > 2
    for part in parts:
        assert telegram_length(part) <= 4096
        check_html(part)  # every part is well-formed on its own


def test_emoji_count_double() -> None:
    parts = split_html("😀" * 3000, 4096)
    assert len(parts) == 2 and all(telegram_length(p) <= 4096 for p in parts)


def test_email_subject_is_one_line() -> None:
    parts = renderer().email([event(task=summary(title=HOSTILE))])
    assert "\r" not in parts.subject and "\n" not in parts.subject
    assert "&lt;script&gt;" in parts.html and "<script>" not in parts.html
    assert "<script>" in parts.text  # plain text is shown as text, not markup


def test_digest_counts_in_russian() -> None:
    many = renderer().telegram([event(task_id=1000 + i) for i in range(5)])
    assert many.startswith("<b>5 событий</b>")
    assert (
        renderer()
        .telegram([event(task_id=1000 + i) for i in range(3)])
        .startswith("<b>3 события</b>")
    )
    assert (
        renderer().email([event(task_id=1000 + i) for i in range(21)]).subject
        == "PlanFix: 21 событие"
    )


def test_templates_can_be_overridden(tmp_path: Path) -> None:
    (tmp_path / "ru").mkdir()
    (tmp_path / "ru" / "message.txt.j2").write_text(
        "{% for it in items %}СВОЙ: {{ it.headline }}{% endfor %}"
    )
    assert renderer(template_dir=tmp_path).text([event()]) == "СВОЙ: Статус: В работе → Завершённая"
    assert (
        renderer(template_dir=tmp_path).telegram([event()]).startswith("<b>Статус")
    )  # the rest stays


def test_unknown_locale_is_refused() -> None:
    with pytest.raises(ValueError, match="locale"):
        renderer(locale="de")


def test_one_line() -> None:
    assert one_line("a\r\nb\u2028c\td") == "a b c d"


def test_one_line_drops_controls_and_bidi_overrides() -> None:
    assert one_line("a\u202eexe.txt\u202c\x1b[31m b\r\nc\u2067d") == "aexe.txt[31m b cd"
    assert one_line("שלום 👨‍👩‍👧 مرحبا") == "שלום 👨‍👩‍👧 مرحبا"  # RTL text and ZWJ stay
