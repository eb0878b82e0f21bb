"""Any task the emulator can serve parses back to the same values (both shapes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.emulator import Account, Emulator, EmulatorControl, Settings
from notifier.planfix import PlanfixClient, Task
from notifier.planfix.model import People, Ref
from tests.conftest import client_settings

MSK = ZoneInfo("Europe/Moscow")

# XML 1.0 can carry any character but most control ones and lone surrogates.
xml_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\n\t<>&\"'"),
    max_size=40,
)
ids = st.integers(min_value=1, max_value=2**31 - 1)
named = st.fixed_dictionaries({"id": ids}, optional={"name": xml_text.filter(str.strip)})
people = st.fixed_dictionaries(
    {}, optional={"users": st.lists(named, max_size=3), "groups": st.lists(named, max_size=2)}
)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31)).map(
    lambda d: d.replace(second=0, microsecond=0)
)
when = st.one_of(
    moments.map(lambda d: d.strftime("%d-%m-%Y %H:%M")),
    moments.map(lambda d: d.strftime("%d-%m-%Y")),
)
custom = st.fixed_dictionaries(
    {"field": st.fixed_dictionaries({"id": ids, "name": xml_text.filter(str.strip)})},
    optional={"value": xml_text.filter(str.strip), "text": xml_text.filter(str.strip)},
)
task_records = st.fixed_dictionaries(
    {"title": xml_text, "status": st.integers(1, 200), "statusSet": st.integers(1, 5)},
    optional={
        "description": xml_text,
        "importance": st.sampled_from(["AVERAGE", "HIGH"]),
        "checkResult": st.booleans(),
        "owner": named,
        "parent": st.integers(0, 10**6),
        "project": named,
        "client": named,
        "beginDateTime": when,
        "startTime": when,
        "endTime": when,
        "isNotAcceptedInTime": st.booleans(),
        "starred": st.booleans(),
        "workers": people,
        "members": people,
        "auditors": people,
        "duration": st.integers(0, 1000),
        "isSummary": st.booleans(),
        "customData": st.lists(custom, max_size=3),
    },
)


def _when(raw: str | None) -> tuple[datetime | None, bool]:
    if not raw:
        return None, True
    if " " in raw:
        return datetime.strptime(raw, "%d-%m-%Y %H:%M").replace(tzinfo=MSK), True
    return datetime.strptime(raw, "%d-%m-%Y").replace(tzinfo=MSK), False


def expected_task(record: dict[str, Any], *, modern: bool, flags: tuple[bool, bool]) -> Task:
    """What the card must read as, worked out from the record, not from the parser."""

    def ref(value: dict[str, Any] | None) -> Ref | None:
        if not value:
            return None
        return Ref(value["id"], value.get("name", "").strip() or None if modern else None)

    def group(value: dict[str, Any] | None, *, present: bool = True) -> People:
        value = value if present else None
        return People(
            users=tuple(r for r in map(ref, (value or {}).get("users", [])) if r),
            groups=tuple(r for r in map(ref, (value or {}).get("groups", [])) if r),
        )

    end_time, end_has_time = _when(record.get("endTime"))
    parent = record.get("parent") or None
    from notifier.planfix.model import CustomValue

    return Task(
        id=record["id"],
        general=record["general"],
        title=record["title"].strip(),
        description=record.get("description", "").strip(),
        importance=record.get("importance", "AVERAGE"),
        status=record["status"],
        status_set=record["statusSet"] if modern else None,
        check_result=record.get("checkResult", False),
        owner=ref(record.get("owner")),
        parent=Ref(parent) if parent else None,
        project=ref(record.get("project")),
        client=ref(record.get("client")),
        begin_datetime=_when(record.get("beginDateTime"))[0],
        start_time=_when(record.get("startTime"))[0],
        end_time=end_time,
        end_time_has_time=end_has_time,
        is_overdued=flags[0],
        is_close_to_deadline=flags[1],
        is_not_accepted_in_time=record.get("isNotAcceptedInTime", False),
        starred=record.get("starred", False),
        workers=group(record.get("workers")),
        members=group(record.get("members"), present=modern),
        auditors=group(record.get("auditors"), present=modern),
        type="task" if modern else None,
        duration=record.get("duration") if modern else None,
        is_summary=record.get("isSummary", False) if modern else False,
        custom_data=tuple(
            CustomValue(
                c["field"]["id"],
                c["field"]["name"].strip(),
                c.get("value", "").strip() or None,
                c.get("text", "").strip() or None,
            )
            for c in record.get("customData", [])
        )
        if modern
        else (),
    )


@pytest.fixture(scope="module")
def running() -> Iterator[tuple[Emulator, EmulatorControl]]:
    with Emulator(Account(Settings())) as emulator:
        remote = EmulatorControl(emulator.base_url)
        remote.set_clock("2026-11-23T12:00:00+03:00", freeze=True)
        yield emulator, remote
        remote.close()


async def _fetch(emulator: Emulator, task_id: int, *, multi: bool) -> Task:
    async with PlanfixClient(client_settings(emulator)) as client:
        if multi:
            result = (await client.get_tasks([task_id, task_id + 10**9]))[task_id]
            assert isinstance(result, Task)
            return result
        return await client.get_task(task_id)


@pytest.mark.parametrize("shape", ["modern", "seed"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=task_records, multi=st.booleans())
def test_served_task_parses_back(
    running: tuple[Emulator, EmulatorControl], shape: str, record: dict[str, Any], multi: bool
) -> None:
    emulator, remote = running
    remote.configure(shape=shape)
    stored = remote.create_task(**record)
    flags = emulator.account.flags(stored)
    parsed = asyncio.run(_fetch(emulator, stored["id"], multi=multi and shape == "modern"))
    assert parsed == expected_task(stored, modern=shape == "modern", flags=flags)
