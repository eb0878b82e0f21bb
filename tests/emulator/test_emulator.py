"""The emulator's own behaviour: quota, clock, flags, control API, shapes."""

from __future__ import annotations

import base64

import httpx
import pytest

from notifier.emulator import Account, Emulator, EmulatorControl, Settings, populate
from notifier.emulator.state import STATUS_SETS
from notifier.planfix import PlanfixClient


async def test_overdue_and_close_to_deadline_follow_the_clock(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.set_clock("2026-11-23T12:00:00+03:00", freeze=True)
    task_id = control.create_task(title="Срок", endTime="24-11-2026 18:00")["id"]
    task = await client.get_task(task_id)
    assert not task.is_overdued and not task.is_close_to_deadline
    control.advance_clock(7 * 3600)  # 19:00: 23 h left
    task = await client.get_task(task_id)
    assert task.is_close_to_deadline and not task.is_overdued
    control.advance_clock(24 * 3600)  # past 18:00 next day
    task = await client.get_task(task_id)
    assert task.is_overdued and not task.is_close_to_deadline
    control.change_task(task_id, status=3)  # completed: no longer overdue
    assert not (await client.get_task(task_id)).is_overdued


async def test_date_only_deadline_is_overdue_after_its_day(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.set_clock("2026-11-24T23:59:00+03:00", freeze=True)
    task_id = control.create_task(title="До конца дня", endTime="24-11-2026")["id"]
    assert not (await client.get_task(task_id)).is_overdued
    control.advance_clock(120)
    assert (await client.get_task(task_id)).is_overdued


async def test_quota_resets_at_midnight_in_the_account_zone(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.set_clock("2026-11-23T23:59:00+03:00", freeze=True)
    control.configure(daily_quota=1)
    task_id = control.create_task(title="Квота")["id"]
    await client.get_task(task_id)
    with pytest.raises(Exception, match="0007"):
        await client.get_task(task_id)
    control.advance_clock(60)
    assert (await client.get_task(task_id)).id == task_id
    assert control.state()["quota"] == {"day": "2026-11-24", "used": 1, "limit": 1, "remaining": 0}


async def test_seed_shape_has_no_id_names_or_newer_fields(
    emulator: Emulator, control: EmulatorControl
) -> None:
    control.configure(shape="seed")
    task_id = control.create_task(
        title="Старый сервер", owner={"id": 7, "name": "Иван"}, members={"users": [{"id": 3}]}
    )["id"]
    body = (
        '<request method="task.get"><account>demo</account>'
        f"<task><id>{task_id}</id></task></request>"
    ).encode()
    answer = emulator.server.api.handle(_basic(emulator), body)
    text = answer.body.decode()
    assert "<owner><id>7</id></owner>" in text
    assert "<name>" not in text and "<members>" not in text and "<statusSet>" not in text
    assert f"<id>{task_id}</id>" not in text


def _basic(emulator: Emulator) -> str:
    settings = emulator.account.settings
    pair = f"{settings.api_key}:{settings.token}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def test_control_api_rejects_what_it_cannot_do(emulator: Emulator) -> None:
    with httpx.Client(base_url=f"{emulator.base_url}/control") as http:
        assert http.post("/tasks", json={"titel": "опечатка"}).status_code == 400
        assert http.post("/tasks", json={"endTime": "2026-11-24"}).status_code == 400
        assert http.patch("/tasks/999", json={"title": "x"}).status_code == 400
        assert http.post("/faults", json={"kind": "meteor"}).status_code == 400
        assert http.post("/settings", json={"shape": "round"}).status_code == 400
        assert http.get("/nothing").status_code == 404
        assert http.post("/clock", json={}).status_code == 400


def test_xml_api_answers_unknown_methods_and_bad_xml(emulator: Emulator) -> None:
    auth = _basic(emulator)
    unknown = emulator.server.api.handle(
        auth, b'<request method="task.fly"><account>demo</account></request>'
    )
    assert b"<code>0008</code>" in unknown.body
    assert b"<code>0003</code>" in emulator.server.api.handle(auth, b"<request").body


def test_emulator_listens_on_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        Emulator(Account(), host="0.0.0.0")  # noqa: S104 - that is the point


def test_fixtures_are_realistic_and_consistent() -> None:
    account = Account(Settings())
    tasks = populate(account, 40)
    assert len(account.tasks) == 40
    assert all(any("а" <= ch <= "я" for ch in t["title"]) for t in tasks)
    for task in tasks:
        known = {sid for sid, _, _ in STATUS_SETS[task["statusSet"]][1]}
        assert task["status"] in known
    assert populate(Account(Settings()), 40) == tasks  # seeded
