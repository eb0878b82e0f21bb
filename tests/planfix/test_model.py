"""The Task card in both shapes, without a server."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from notifier.planfix.errors import BadResponseError
from notifier.planfix.model import People, Ref, Task, parse_datetime, parse_task

MSK = ZoneInfo("Europe/Moscow")

SEED_CARD = """
<task>
  <title>Подготовить отчёт</title><description>Описание &amp; детали</description>
  <importance>HIGH</importance><status>2</status><checkResult>1</checkResult>
  <owner><id>7</id></owner><parent><id>0</id></parent><project><id>12</id></project>
  <client><id></id></client>
  <beginDateTime>01-11-2026 09:30</beginDateTime><startTime></startTime>
  <endTime>21-11-2026 18:00</endTime><general>418</general>
  <isOverdued>1</isOverdued><isCloseToDeadline>0</isCloseToDeadline>
  <isNotAcceptedInTime>0</isNotAcceptedInTime><starred>0</starred>
  <workers><users><id>1</id><id>2</id></users><groups><id>20</id></groups></workers>
  <periodicity>
    <weekly><type>AFTER_COMPLETE</type><shift>2</shift><days>1,3,5</days></weekly>
    <startDate>01-12-2026</startDate>
    <endCondition><type>BYCOUNT</type><date></date><repeatCount>10</repeatCount></endCondition>
    <notify><type>0</type><day>2</day></notify>
  </periodicity>
  <somethingNew><deep>ignored</deep></somethingNew>
</task>
"""

MODERN_CARD = """
<task>
  <id>1001</id><title>Согласовать договор</title><description/>
  <importance>AVERAGE</importance><status>101</status><statusSet>2</statusSet>
  <checkResult>0</checkResult>
  <owner><id>7</id><name>Иван Петров</name></owner>
  <project><id>12</id><name>Сайт компании</name></project>
  <endTime>25-11-2026</endTime><general>5</general>
  <isOverdued>0</isOverdued><isCloseToDeadline>1</isCloseToDeadline>
  <workers><users><user><id>1</id><name>Мария</name></user></users><groups/></workers>
  <members><users><user><id>3</id><name>Ольга</name></user></users></members>
  <auditors><users/><groups><group><id>21</id><name>Бухгалтерия</name></group></groups></auditors>
  <type>task</type><template><id>55</id></template><duration>3</duration>
  <durationUnit>1</durationUnit><isSummary>0</isSummary>
  <customData>
    <customValue>
      <field><id>9</id><name>Бюджет</name></field><value>1500</value><text>1 500 ₽</text>
    </customValue>
  </customData>
</task>
"""


def parse(xml: str, task_id: int | None = None) -> Task:
    return parse_task(etree.fromstring(xml), MSK, task_id=task_id)


def test_seed_card_parses_every_field() -> None:
    task = parse(SEED_CARD, task_id=99)
    assert task.id == 99  # the seed's card has no <id>: the id asked for is used
    assert task.title == "Подготовить отчёт"
    assert task.description == "Описание & детали"
    assert (task.importance, task.status, task.check_result) == ("HIGH", 2, True)
    assert task.owner == Ref(7)
    assert task.parent is None  # 0 means "no parent task"
    assert task.project == Ref(12)
    assert task.client is None  # empty = not set
    assert task.begin_datetime == datetime(2026, 11, 1, 9, 30, tzinfo=MSK)
    assert task.start_time is None
    assert task.end_time == datetime(2026, 11, 21, 18, 0, tzinfo=MSK)
    assert task.deadline == task.end_time
    assert task.general == 418
    assert task.is_overdued and not task.is_close_to_deadline
    assert task.workers == People(users=(Ref(1), Ref(2)), groups=(Ref(20),))
    period = task.periodicity
    assert period is not None
    assert (period.kind, period.type, period.shift, period.days) == (
        "weekly",
        "AFTER_COMPLETE",
        2,
        (1, 3, 5),
    )
    assert period.start_date == datetime(2026, 12, 1, tzinfo=MSK)
    assert period.end_condition is not None
    assert (period.end_condition.type, period.end_condition.repeat_count) == ("BYCOUNT", 10)
    assert period.end_condition.date is None
    assert (period.notify_type, period.notify_day) == (0, 2)


def test_modern_card_parses_names_and_newer_fields() -> None:
    task = parse(MODERN_CARD)
    assert task.id == 1001
    assert task.description == ""
    assert (task.status, task.status_set) == (101, 2)
    assert task.owner == Ref(7, "Иван Петров")
    assert task.workers.users == (Ref(1, "Мария"),)
    assert task.members.users == (Ref(3, "Ольга"),)
    assert task.auditors.groups == (Ref(21, "Бухгалтерия"),)
    assert (task.type, task.template, task.duration, task.duration_unit) == ("task", 55, 3, "1")
    assert task.custom_data[0].field_name == "Бюджет" and task.custom_data[0].text == "1 500 ₽"
    assert task.periodicity is None


def test_date_only_deadline_lasts_the_whole_day() -> None:
    task = parse(MODERN_CARD)
    assert task.end_time == datetime(2026, 11, 25, tzinfo=MSK)
    assert not task.end_time_has_time
    assert task.deadline == datetime(2026, 11, 26, tzinfo=MSK)


def test_tasks_are_immutable_and_comparable() -> None:
    first, second = parse(MODERN_CARD), parse(MODERN_CARD)
    assert first == second and hash(first) == hash(second)
    with pytest.raises(FrozenInstanceError):
        first.status = 3  # type: ignore[misc]
    changed = parse(MODERN_CARD.replace("<status>101</status>", "<status>3</status>"))
    assert changed != first


@pytest.mark.parametrize(
    ("fragment", "replacement", "message"),
    [
        ("<status>2</status>", "<status>two</status>", "status is not a number"),
        ("<isOverdued>1</isOverdued>", "<isOverdued>yes</isOverdued>", "isOverdued is not 0/1"),
        ("<endTime>21-11-2026 18:00</endTime>", "<endTime>2026-11-21</endTime>", "unreadable date"),
        ("<users><id>1</id>", "<users><id>x</id>", "workers.users.id"),
    ],
)
def test_garbled_field_is_a_bad_response_naming_it(
    fragment: str, replacement: str, message: str
) -> None:
    with pytest.raises(BadResponseError, match=message):
        parse(SEED_CARD.replace(fragment, replacement), task_id=1)


def test_card_for_another_task_is_refused() -> None:
    with pytest.raises(BadResponseError, match="asked for task 5, got task 1001"):
        parse(MODERN_CARD, task_id=5)


def test_card_without_any_id_is_refused() -> None:
    with pytest.raises(BadResponseError, match="without an id"):
        parse(SEED_CARD)


def test_datetime_formats() -> None:
    assert parse_datetime("05-03-2026 07:45", MSK) == (
        datetime(2026, 3, 5, 7, 45, tzinfo=MSK),
        True,
    )
    assert parse_datetime("05-03-2026", MSK) == (datetime(2026, 3, 5, tzinfo=MSK), False)
    with pytest.raises(BadResponseError):
        parse_datetime("31-02-2026", MSK)
