"""The client against the emulator, over real HTTP on loopback."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifier.emulator import Emulator, EmulatorControl
from notifier.planfix import (
    BadResponseError,
    ConfigError,
    ErrorClass,
    PlanfixApiError,
    PlanfixClient,
    PlanfixError,
    QuotaExhaustedError,
    RequestRecord,
    Task,
    TaskQuery,
    TransportError,
)
from tests.conftest import ClientFactory

MSK = ZoneInfo("Europe/Moscow")


class RecordingGate:
    """Sees every request the client makes, as the quota ledger will."""

    def __init__(self, refuse_after: int | None = None) -> None:
        self.asked: list[str] = []
        self.records: list[RequestRecord] = []
        self.refuse_after = refuse_after

    async def before_request(self, method: str) -> None:
        if self.refuse_after is not None and len(self.asked) >= self.refuse_after:
            raise QuotaExhaustedError("budget spent")
        self.asked.append(method)

    async def after_request(self, record: RequestRecord) -> None:
        self.records.append(record)


def requests(control: EmulatorControl) -> dict[str, int]:
    return dict(control.state()["requests"])


# --- methods --------------------------------------------------------------------


async def test_task_get_reads_the_card(control: EmulatorControl, client: PlanfixClient) -> None:
    deadline = (datetime.now(MSK) + timedelta(days=400)).replace(hour=18, minute=0, second=0)
    made = control.create_task(
        title="Подготовить отчёт по продажам",
        status=2,
        importance="HIGH",
        endTime=deadline.strftime("%d-%m-%Y %H:%M"),
        project={"id": 12, "name": "Сайт компании"},
        workers={"users": [{"id": 1, "name": "Иван Петров"}]},
    )
    task = await client.get_task(made["id"])
    assert task.id == made["id"] and task.general == made["general"]
    assert task.title == "Подготовить отчёт по продажам"
    assert (task.status, task.importance) == (2, "HIGH")
    assert task.end_time == deadline.replace(microsecond=0)
    assert task.project is not None and task.project.name == "Сайт компании"
    assert [u.name for u in task.workers.users] == ["Иван Петров"]
    assert not task.is_overdued


async def test_task_get_by_number(control: EmulatorControl, client: PlanfixClient) -> None:
    made = control.create_task(title="По номеру", general=4242)
    task = await client.get_task_by_number(4242)
    assert task.id == made["id"]


async def test_get_multi_reads_many_in_one_request(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(5)]
    results = await client.get_tasks(ids)
    assert list(results) == ids
    assert all(isinstance(r, Task) for r in results.values())
    assert requests(control) == {"task.getMulti": 1}
    assert client.multi_supported is True


async def test_get_multi_batches_by_hundred(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(230)]
    results = await client.get_tasks(ids)
    assert len(results) == 230 and all(isinstance(r, Task) for r in results.values())
    assert requests(control) == {"task.getMulti": 3}


async def test_get_multi_falls_back_to_task_get_and_remembers(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.configure(supports_multi=False)
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(3)]
    assert all(isinstance(r, Task) for r in (await client.get_tasks(ids)).values())
    assert client.multi_supported is False
    assert requests(control) == {"task.getMulti": 1, "task.get": 3}
    await client.get_tasks(ids)
    assert requests(control) == {"task.getMulti": 1, "task.get": 6}  # not asked again


async def test_get_multi_forbidden_also_falls_back(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(2)]
    control.inject("error", code="0020", method="task.getMulti")
    assert all(isinstance(r, Task) for r in (await client.get_tasks(ids)).values())
    assert client.multi_supported is False


async def test_too_many_objects_splits_the_batch(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(4)]
    control.inject("error", code="0021", method="task.getMulti")
    results = await client.get_tasks(ids)
    assert all(isinstance(r, Task) for r in results.values())
    assert requests(control) == {"task.getMulti": 3}


async def test_a_missing_task_in_a_batch_is_confirmed_by_task_get(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    kept = control.create_task(title="Осталась")["id"]
    gone = control.create_task(title="Удалена")["id"]
    hidden = control.create_task(title="Без доступа", access=False)["id"]
    control.delete_task(gone)
    results = await client.get_tasks([kept, gone, hidden])
    assert isinstance(results[kept], Task)
    gone_error, hidden_error = results[gone], results[hidden]
    assert isinstance(gone_error, PlanfixApiError) and gone_error.code == "3001"
    assert isinstance(hidden_error, PlanfixApiError) and hidden_error.code == "3008"
    assert gone_error.error_class is hidden_error.error_class is ErrorClass.TASK


async def test_one_bad_task_never_stops_the_rest(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.configure(supports_multi=False)
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(3)]
    control.inject("malformed", method="task.get", task_id=ids[1])
    results = await client.get_tasks(ids)
    assert isinstance(results[ids[0]], Task) and isinstance(results[ids[2]], Task)
    assert isinstance(results[ids[1]], BadResponseError)


async def test_quota_error_stops_asking_about_the_rest(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.configure(supports_multi=False, daily_quota=2)
    ids = [control.create_task(title=f"Задача {n}")["id"] for n in range(5)]
    results = await client.get_tasks(ids)
    errors = [r for r in results.values() if isinstance(r, PlanfixError)]
    assert len(results) == 5 and len(errors) == 4
    assert all(e.error_class is ErrorClass.QUOTA for e in errors)
    # getMulti (unsupported) + 1 task.get that used the quota + the one that hit 0007
    assert sum(requests(control).values()) == 3


async def test_task_list_pages(control: EmulatorControl, client: PlanfixClient) -> None:
    for n in range(3):
        control.create_task(title=f"Активная {n}", status=2)
    control.create_task(title="Завершённая", status=3)
    found = await client.list_tasks(TaskQuery(active=True))
    assert found.total == 3 and {t.title for t in found.tasks} == {
        f"Активная {n}" for n in range(3)
    }
    assert (await client.list_tasks(TaskQuery(active=True), page=0)).tasks == []


async def test_feeds_name_what_changed(control: EmulatorControl, client: PlanfixClient) -> None:
    """task.getList by last change (minute precision in the API user's zone)
    and the account's action log: the poller's change feeds."""
    start = (datetime.now(MSK) - timedelta(days=1)).replace(
        hour=12, minute=0, second=0, microsecond=0
    )
    control.set_clock(start.isoformat(), freeze=True)
    quiet, moved = (control.create_task(title=f"Лента {n}", status=1)["id"] for n in range(2))
    bad = control.create_task(title="Кривая", status=1)["id"]
    control.advance_clock(300)
    control.change_task(moved, status=2)
    control.change_task(bad, status=2, garbled={"endTime": "завтра"})
    since = start + timedelta(minutes=2)
    page = await client.list_tasks(TaskQuery(changed_since=since))
    assert [t.id for t in page.tasks] == [moved] and page.unreadable == [bad] and page.total == 2
    actions, total = await client.list_actions(since, since + timedelta(minutes=10))
    assert total == 2 and [(a.task_id, a.kind) for a in actions] == [
        (moved, "STATUSCHANGED"),
        (bad, "STATUSCHANGED"),
    ]
    assert (actions[0].old_status, actions[0].new_status) == (1, 2)
    assert actions[0].at == start + timedelta(minutes=5)
    assert quiet not in {a.task_id for a in actions}


async def test_status_catalog_names_and_cache(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    catalog = await client.status_catalog()
    assert catalog.name(2, 1) == "В работе"
    assert catalog.name(101, 2) == "На ревью"
    assert catalog.name(999, 1) is None
    assert catalog.is_finished(3, 1) and not catalog.is_finished(2, 1)
    await client.status_catalog()
    assert requests(control) == {"taskStatus.getSetList": 1, "taskStatus.getListOfSet": 2}


async def test_status_catalog_without_the_methods_is_empty(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.inject("error", code="0008", method="taskStatus.getSetList")
    catalog = await client.status_catalog()
    assert catalog.name(2) is None
    assert catalog.is_finished(3) and not catalog.is_finished(2)  # system numbers


# --- authentication -------------------------------------------------------------


async def test_login_mode_logs_in_once_and_reuses_the_sid(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(token=None, login="robot", password="robot-password")
    task_id = control.create_task(title="Вход по логину")["id"]
    for _ in range(3):
        await client.get_task(task_id)
    assert requests(control) == {"auth.login": 1, "task.get": 3}


async def test_login_mode_logs_in_again_when_the_session_expires(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(token=None, login="robot", password="robot-password")
    task_id = control.create_task(title="Сессия")["id"]
    await client.get_task(task_id)
    control.expire_sessions()
    assert (await client.get_task(task_id)).id == task_id
    assert requests(control) == {"auth.login": 2, "task.get": 3}


async def test_login_mode_session_clock_expiry(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(token=None, login="robot", password="robot-password")
    task_id = control.create_task(title="Сессия по часам")["id"]
    await client.get_task(task_id)
    control.advance_clock(3601)
    await client.get_task(task_id)
    assert requests(control)["auth.login"] == 2


async def test_login_mode_retries_only_once(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(token=None, login="robot", password="robot-password")
    task_id = control.create_task(title="Сессия")["id"]
    control.inject("error", code="0005", method="task.get", times=2)
    with pytest.raises(PlanfixApiError) as caught:
        await client.get_task(task_id)
    assert caught.value.code == "0005"
    assert requests(control) == {"auth.login": 2, "task.get": 2}


async def test_wrong_password_is_fatal_and_names_no_secret(make_client: ClientFactory) -> None:
    client = make_client(token=None, login="robot", password="wrong-Pa55")
    with pytest.raises(PlanfixApiError) as caught:
        await client.get_task(1)
    assert caught.value.code == "1001"
    assert caught.value.error_class is ErrorClass.FATAL_CONFIG
    assert "wrong-Pa55" not in repr(caught.value) + str(caught.value)


async def test_wrong_token_is_fatal(make_client: ClientFactory) -> None:
    with pytest.raises(PlanfixApiError) as caught:
        await make_client(token="not-the-token").get_task(1)
    assert caught.value.code == "0012"
    assert caught.value.error_class is ErrorClass.FATAL_CONFIG


@pytest.mark.parametrize(
    ("overrides", "code"),
    [({"api_key": "bad-key"}, "0001"), ({"account": "elsewhere"}, "0004")],
)
async def test_config_errors_are_fatal(
    make_client: ClientFactory, overrides: dict[str, str], code: str
) -> None:
    with pytest.raises(PlanfixApiError) as caught:
        await make_client(**overrides).get_task(1)
    assert caught.value.code == code
    assert caught.value.error_class is ErrorClass.FATAL_CONFIG


async def test_wrong_data_centre(control: EmulatorControl, make_client: ClientFactory) -> None:
    control.configure(other_dc_accounts=["moved"])
    with pytest.raises(PlanfixApiError) as caught:
        await make_client(account="moved").get_task(1)
    assert caught.value.code == "0024" and "api-us.planfix.com" in str(caught.value)


async def test_signed_requests_are_accepted(
    emulator: Emulator, control: EmulatorControl, make_client: ClientFactory
) -> None:
    control.configure(signature_key="sign-me")
    task_id = control.create_task(title="Подписано")["id"]
    assert (await make_client(signature_key="sign-me").get_task(task_id)).id == task_id
    login_client = make_client(
        token=None, login="robot", password="robot-password", signature_key="sign-me"
    )
    assert (await login_client.get_task(task_id)).id == task_id


async def test_wrong_signature_key_is_fatal(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    control.configure(signature_key="sign-me")
    with pytest.raises(PlanfixApiError) as caught:
        await make_client(signature_key="other").get_task(1)
    assert caught.value.code == "0006"
    assert caught.value.error_class is ErrorClass.FATAL_CONFIG
    assert "other" not in str(caught.value)


def test_plain_http_to_a_remote_host_is_refused() -> None:
    from notifier.planfix import ClientSettings

    for endpoint in ("http://api.planfix.ru/xml/", "ftp://127.0.0.1/", "http://10.0.0.1/xml/"):
        with pytest.raises(ConfigError, match="HTTPS only"):
            PlanfixClient(ClientSettings(account="a", api_key="k", token="t", endpoint=endpoint))
    for endpoint in ("http://127.0.0.5:1/xml/", "http://[::1]:1/xml/", "http://localhost/xml/"):
        PlanfixClient(ClientSettings(account="a", api_key="k", token="t", endpoint=endpoint))


def test_client_needs_a_token_or_a_login() -> None:
    from notifier.planfix import ClientSettings

    with pytest.raises(ConfigError, match="token"):
        PlanfixClient(ClientSettings(account="a", api_key="k"))


def test_repr_shows_no_secret() -> None:
    from notifier.planfix import ClientSettings

    settings = ClientSettings(account="a", api_key="KEY123", token="TOK456", signature_key="SIG")
    shown = repr(settings) + repr(PlanfixClient(settings))
    assert "KEY123" not in shown and "TOK456" not in shown and "SIG" not in shown


# --- error classes and bad answers ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("0011", ErrorClass.TRANSIENT),
        ("3014", ErrorClass.TRANSIENT),
        ("0000", ErrorClass.TRANSIENT),
        ("0007", ErrorClass.QUOTA),
        ("0010", ErrorClass.FATAL_CONFIG),
        ("0003", ErrorClass.BUG),
        ("3008", ErrorClass.TASK),
    ],
)
async def test_each_error_class_reaches_the_caller(
    control: EmulatorControl, client: PlanfixClient, code: str, error_class: ErrorClass
) -> None:
    control.inject("error", code=code)
    with pytest.raises(PlanfixApiError) as caught:
        await client.get_task(1)
    assert (caught.value.code, caught.value.error_class) == (code, error_class)


async def test_daily_quota_from_the_server(control: EmulatorControl, client: PlanfixClient) -> None:
    control.configure(daily_quota=3)
    task_id = control.create_task(title="Квота")["id"]
    gate = RecordingGate()
    client.gate = gate
    for _ in range(3):
        await client.get_task(task_id)
    with pytest.raises(PlanfixApiError) as caught:
        await client.get_task(task_id)
    assert caught.value.error_class is ErrorClass.QUOTA
    assert [r.rate_limit_remaining for r in gate.records] == [2, 1, 0, 0]
    control.advance_clock(24 * 3600)  # the next quota day
    await client.get_task(task_id)


async def test_the_gate_sees_every_request_including_failures_and_logins(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    gate = RecordingGate()
    client = make_client(gate=gate, token=None, login="robot", password="robot-password")
    task_id = control.create_task(title="Учёт")["id"]
    await client.get_task(task_id)
    control.inject("html")
    with pytest.raises(BadResponseError):
        await client.get_task(task_id)
    assert gate.asked == ["auth.login", "task.get", "task.get"]
    assert [r.ok for r in gate.records] == [True, True, False]
    assert all(r.rate_limit_remaining is not None for r in gate.records)
    assert all(r.elapsed_s >= 0 for r in gate.records)


async def test_a_refusing_gate_sends_nothing(
    control: EmulatorControl, make_client: ClientFactory
) -> None:
    client = make_client(gate=RecordingGate(refuse_after=0))
    with pytest.raises(QuotaExhaustedError):
        await client.get_task(1)
    assert requests(control) == {}


@pytest.mark.parametrize(
    ("kind", "options", "reason"),
    [
        ("http_error", {"status": 502}, "HTTP 502"),
        ("http_error", {"status": 503}, "HTTP 503"),
        ("html", {}, "an HTML page"),
        ("malformed", {}, "not well-formed"),
        ("wrong_root", {}, "root element <error>"),
        ("xml_bomb", {}, "DTD or entity"),
        ("xxe", {}, "DTD or entity"),
        ("huge", {}, "larger than"),
        ("non_utf8", {}, "not well-formed"),
    ],
)
async def test_bad_answers_are_one_typed_error(
    control: EmulatorControl, client: PlanfixClient, kind: str, options: dict[str, int], reason: str
) -> None:
    task_id = control.create_task(title="Хорошая")["id"]
    control.inject(kind, **options)
    with pytest.raises(BadResponseError) as caught:
        await client.get_task(task_id)
    assert reason in str(caught.value)
    assert caught.value.error_class is ErrorClass.TRANSIENT
    assert "root:" not in str(caught.value)  # never a line of /etc/passwd
    assert len(str(caught.value)) < 400
    assert (await client.get_task(task_id)).title == "Хорошая"  # the next poll is fine


async def test_html_error_page_has_a_short_excerpt(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.inject("http_error", status=502)
    with pytest.raises(BadResponseError) as caught:
        await client.get_task(1)
    assert "502 Bad Gateway" in caught.value.excerpt


async def test_connection_reset_is_transient(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.inject("reset")
    with pytest.raises(TransportError) as caught:
        await client.get_task(1)
    assert caught.value.transient


async def test_timeout_is_transient(control: EmulatorControl, make_client: ClientFactory) -> None:
    control.inject("slow", delay_s=1.0)
    with pytest.raises(TransportError, match=r"did not answer task\.get within 0\.2 s"):
        await make_client(timeout_s=0.2).get_task(1)


async def test_unreachable_server_is_transient(make_client: ClientFactory) -> None:
    client = make_client(endpoint="http://127.0.0.1:9/xml/")
    with pytest.raises(TransportError, match="unreachable"):
        await client.get_task(1)


async def test_rate_limit_answer_carries_retry_after(
    control: EmulatorControl, client: PlanfixClient
) -> None:
    control.configure(rps_limit=1.0)
    task_id = control.create_task(title="Скорость")["id"]
    await client.get_task(task_id)
    with pytest.raises(BadResponseError) as caught:
        await client.get_task(task_id)
    assert "HTTP 429" in str(caught.value) and caught.value.retry_after_s == 1.0
