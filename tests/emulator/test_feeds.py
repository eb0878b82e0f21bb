"""The emulator's change feeds: task.getList with PlanFix's filters and
paging, action.getListByPeriod with the action log and the clock's flips."""

from __future__ import annotations

import base64

import pytest
from lxml import etree

from notifier.emulator import Emulator, EmulatorControl

START = "2026-11-23T12:00:00+03:00"


def _call(emulator: Emulator, method: str, body: str) -> etree._Element:
    settings = emulator.account.settings
    auth = "Basic " + base64.b64encode(f"{settings.api_key}:{settings.token}".encode()).decode()
    request = f'<request method="{method}"><account>demo</account>{body}</request>'
    answer = emulator.server.api.handle(auth, request.encode())
    root = etree.fromstring(answer.body)
    assert root.get("status") == "ok", answer.body.decode()
    return root


def changed_since(when: str) -> str:
    return (
        "<filters><filter><type>38</type><operator>gt</operator><value>"
        f"<datetype>anotherdate_withtime</datetype><datefrom>{when}</datefrom>"
        "</value></filter></filters>"
    )


def listed(emulator: Emulator, body: str) -> tuple[list[int], int]:
    tasks = _call(emulator, "task.getList", body).find("tasks")
    assert tasks is not None
    return [int(t.findtext("id") or 0) for t in tasks.iterfind("task")], int(
        tasks.get("totalCount") or 0
    )


@pytest.fixture
def frozen(control: EmulatorControl) -> EmulatorControl:
    control.set_clock(START, freeze=True)
    return control


def test_last_change_filter_sees_changes_not_silent_ones(
    emulator: Emulator, frozen: EmulatorControl
) -> None:
    old, changed, hushed = (frozen.create_task(title=f"З{n}", status=1)["id"] for n in range(3))
    frozen.advance_clock(600)  # 12:10
    frozen.change_task(changed, status=2)
    frozen.change_task(hushed, silent=True, status=2)
    ids, total = listed(emulator, changed_since("23-11-2026 12:05"))
    assert ids == [changed] and total == 1
    everything, _ = listed(emulator, changed_since("23-11-2026 11:59"))
    assert everything == [old, changed, hushed]  # created after 11:59


def test_pages_of_a_hundred_and_a_count_alone(emulator: Emulator, frozen: EmulatorControl) -> None:
    made = [frozen.create_task(title=f"Т{n}")["id"] for n in range(150)]
    first, total = listed(emulator, "<pageCurrent>1</pageCurrent><pageSize>500</pageSize>")
    second, _ = listed(emulator, "<pageCurrent>2</pageCurrent>")
    assert total == 150 and first + second == made and len(first) == 100
    counted, total = listed(emulator, "<pageCurrent>0</pageCurrent>")
    assert counted == [] and total == 150


def test_target_project_status_and_overdue_filters(
    emulator: Emulator, frozen: EmulatorControl
) -> None:
    ours = frozen.create_task(title="Наша", project={"id": 12}, status=1)["id"]
    late = frozen.create_task(title="Срок", project=12, status=2, endTime="23-11-2026 11:00")["id"]
    other = frozen.create_task(
        title="Чужая", project={"id": 13}, status=2, workers={"users": [{"id": 5}]}
    )["id"]
    frozen.save_filter(7, project=12)
    frozen.save_filter(8, worker=5)
    assert listed(emulator, "<target>7</target>")[0] == [ours, late]
    assert listed(emulator, "<target>8</target>")[0] == [other]
    assert listed(emulator, "<project><id>13</id></project>")[0] == [other]
    status = "<filters><filter><type>10</type><operator>equal</operator><value>1;3</value></filter></filters>"
    assert listed(emulator, status)[0] == [ours]
    overdue = "<filters><filter><type>17</type><operator>equal</operator><value>1</value></filter></filters>"
    assert listed(emulator, overdue)[0] == [late]
    assert listed(emulator, "<filter>OVERDUE</filter>")[0] == [late]


def actions(emulator: Emulator, since: str, until: str, extra: str = "") -> list[etree._Element]:
    root = _call(
        emulator,
        "action.getListByPeriod",
        f"<fromDate>{since}</fromDate><toDate>{until}</toDate>{extra}",
    )
    container = root.find("actions")
    assert container is not None
    return list(container.iterfind("action"))


def test_the_action_log_has_changes_and_flips_but_no_silent_change(
    emulator: Emulator, frozen: EmulatorControl
) -> None:
    task = frozen.create_task(title="Журнал", status=1, endTime="24-11-2026 18:00")["id"]
    frozen.advance_clock(60)
    frozen.change_task(task, status=2)
    frozen.change_task(task, endTime="24-11-2026 12:00")
    frozen.change_task(task, silent=True, title="Тихо")
    log = actions(emulator, "23-11-2026 12:00", "23-11-2026 12:01", "<sort>asc</sort>")
    log = [a for a in log if a.findtext("type") != "TASKCLOSETODEADLINE"]
    assert [a.findtext("type") for a in log] == ["STATUSCHANGED", "TASKCHANGED"]
    assert log[0].findtext("statusChange/oldStatus") == "1"
    assert log[0].findtext("statusChange/newStatus") == "2"
    assert log[0].findtext("task/id") == str(task)
    assert log[1].findtext("taskExpectDateChanged/newDate") == "24-11-2026 12:00"
    frozen.advance_clock(25 * 3600)  # past the deadline
    flips = actions(emulator, "23-11-2026 12:01", "25-11-2026 00:00")
    timed = {"TASKOVERDUED", "TASKCLOSETODEADLINE"}
    assert [
        (a.findtext("type"), a.findtext("dateTime")) for a in flips if a.findtext("type") in timed
    ] == [
        ("TASKOVERDUED", "24-11-2026 12:00"),  # newest first, by default
        ("TASKCLOSETODEADLINE", "23-11-2026 12:01"),  # when the deadline was moved near
    ]
    assert frozen.state()["requests"]["action.getListByPeriod"] == 2  # each call one request


def test_a_flip_moves_the_last_change_date_only_where_configured(
    emulator: Emulator, frozen: EmulatorControl
) -> None:
    task = frozen.create_task(title="Флип", endTime="23-11-2026 13:00")["id"]
    frozen.advance_clock(2 * 3600)  # overdue since 13:00
    assert listed(emulator, changed_since("23-11-2026 12:30"))[0] == []
    frozen.configure(flip_moves_last_change=True)
    assert listed(emulator, changed_since("23-11-2026 12:30"))[0] == [task]


def test_deadline_period_filter(emulator: Emulator, frozen: EmulatorControl) -> None:
    inside = frozen.create_task(title="В окне", endTime="23-11-2026 11:30")["id"]
    frozen.create_task(title="Раньше", endTime="22-11-2026 11:30")
    frozen.create_task(title="Без срока")
    period = (
        "<filters><filter><type>14</type><operator>equal</operator><value>"
        "<datetype>anotherperiod_withtime</datetype><datefrom>23-11-2026 11:00</datefrom>"
        "<dateto>23-11-2026 12:00</dateto></value></filter></filters>"
    )
    assert listed(emulator, period)[0] == [inside]
