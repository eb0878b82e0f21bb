"""Several PlanFix accounts in one service ([planfix] and [accounts.NAME]):
each its own emulator, its own quota, watch set and task ids (the same id
in two accounts is two tasks); alerts name their account and routes filter
by it; the bot's commands find the account by name or by a task's link."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from notifier.alerts.events import Event, EventKind
from notifier.app import Service
from notifier.cli import _start_push, main
from notifier.config import ConfigError, config_from_dict
from notifier.emulator import Account, Emulator, EmulatorControl, Settings
from notifier.web.ops import operator_routes
from notifier.web.server import HttpServer
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import CHAT, _toml, midday_zone, settings, until

OTHER_CHAT = -2002
USER = 77
ADMIN = 78


@pytest.fixture
def second(emulator: Emulator) -> Iterator[tuple[Emulator, EmulatorControl]]:
    """Another account's emulator; both where it is midday now (their quota
    days never end under a test)."""
    zone = emulator.account.settings.timezone = midday_zone()
    with Emulator(Account(Settings(account="client2", timezone=zone))) as running:
        control = EmulatorControl(running.base_url)
        yield running, control
        control.close()


def two_accounts(
    emulator: Emulator, other: Emulator, telegram: TelegramServer, state: Path, task: int
) -> dict[str, Any]:
    """[planfix] (the emulator "demo") and [accounts.client2]; demo's alerts
    to the team's chat, client2's to another chat; the bot on the team's."""
    data = settings(emulator, telegram, state, [task])
    emu = other.account.settings
    data["planfix"]["timezone"] = emulator.account.settings.timezone
    data["accounts"] = {
        "client2": {
            "account": emu.account,
            "endpoint": other.endpoint,
            "api_key": emu.api_key,
            "token": emu.token,
            "daily_quota": emu.daily_quota,
            "timezone": emu.timezone,
            "requests_per_second": 20,
            "watch": {"tasks": [task], "min_interval_s": 1},
        }
    }
    team = data["channels"]["team"]
    data["channels"]["c2"] = {**team, "chat_ids": [OTHER_CHAT]}
    data["routes"] = [
        {"accounts": ["demo"], "channels": ["team"]},
        {"accounts": ["client2"], "channels": ["c2"]},
    ]
    data["bot"] = {"channel": "team", "allowed_chats": [CHAT], "poll_timeout_s": 1}
    return data


@pytest.fixture
async def started() -> AsyncIterator[list[Service]]:
    services: list[Service] = []
    yield services
    for service in services:
        await service.stop()


async def start(started: list[Service], data: dict[str, Any], *, bot: bool = False) -> Service:
    """The service of this config, started (and its bot); stopped after the test."""
    service = Service(config_from_dict(data, source="test", environ={}))
    started.append(service)
    await service.start()
    if bot:
        await service.start_bot()
    return service


async def test_two_accounts_alert_apart_and_count_their_own_quota(
    emulator: Emulator,
    control: EmulatorControl,
    second: tuple[Emulator, EmulatorControl],
    telegram: TelegramServer,
    tmp_path: Path,
    started: list[Service],
) -> None:
    other, other_control = second
    task = control.create_task(title="Отчёт demo", status=1)["id"]
    same = other_control.create_task(title="Отчёт client2", status=1)["id"]
    assert task == same  # task ids are an account's own
    data = two_accounts(emulator, other, telegram, tmp_path / "state.sqlite3", task)
    service = await start(started, data)
    watches = service.watches
    assert list(watches) == ["demo", "client2"]
    await until(lambda: all(w.poller.records[task].card is not None for w in watches.values()))

    other_control.change_task(same, status=2)
    await until(lambda: len(telegram.fake.texts(OTHER_CHAT)) == 1)
    said = telegram.fake.texts(OTHER_CHAT)[0]
    assert "[client2]" in said and "Новая → В работе" in said and "Отчёт client2" in said
    assert "https://client2.planfix.ru/task/" in said  # its own account's link
    control.change_task(task, status=3)
    await until(lambda: len(telegram.fake.texts(CHAT)) == 1)
    said = telegram.fake.texts(CHAT)[0]
    assert "[demo]" in said and "Отчёт demo" in said and "https://demo.planfix.ru/" in said
    await asyncio.sleep(1)  # no alert crosses over, none is repeated
    assert len(telegram.fake.texts(CHAT)) == len(telegram.fake.texts(OTHER_CHAT)) == 1

    for watch, emu in ((watches["demo"], emulator), (watches["client2"], other)):
        stored = await watch.store.load_quota(watch.ledger.today().day)
        assert stored is not None and stored.used == emu.account.quota_used  # every request
    await service.stop()
    again = Service(config_from_dict(data, source="test", environ={}))  # a restart
    started.append(again)
    await again.load()
    cards = [again.watches[name].poller.records[task].card for name in ("demo", "client2")]
    assert [c.status if c else None for c in cards] == [3, 2]  # each account's own card


async def test_the_bot_finds_the_account_by_name_or_by_link(
    emulator: Emulator,
    control: EmulatorControl,
    second: tuple[Emulator, EmulatorControl],
    telegram: TelegramServer,
    tmp_path: Path,
    started: list[Service],
) -> None:
    other, other_control = second
    task = control.create_task(title="Своя", status=1)["id"]
    made = other_control.create_task(title="Клиентская", status=1)
    by_link = other_control.create_task(title="По ссылке", status=1)
    data = two_accounts(emulator, other, telegram, tmp_path / "state.sqlite3", task)
    service = await start(started, data, bot=True)
    fake = telegram.fake

    fake.say(CHAT, USER, f"/watch {made['general']}")  # which account? it asks
    await until(lambda: any("В каком аккаунте" in t for t in fake.texts(CHAT)))
    fake.say(CHAT, USER, f"/watch client2 {made['general']}")
    await until(lambda: any("Слежу: [client2] " in t for t in fake.texts(CHAT)))
    fake.say(CHAT, USER, f"/watch https://client2.planfix.ru/task/{by_link['general']}")
    await until(lambda: sum("Слежу: [client2] " in t for t in fake.texts(CHAT)) == 2)
    client2 = service.watches["client2"]
    assert await client2.store.watched_ids(f"chat:{CHAT}") == sorted([made["id"], by_link["id"]])
    assert await service.watches["demo"].store.watched_ids(f"chat:{CHAT}") == []

    other_control.change_task(made["id"], status=2)  # the chat hears of its client2 task
    await until(lambda: any("[client2] <b>Статус" in t for t in fake.texts(CHAT)))
    alert = next(s for s in fake.sent if "[client2] <b>Статус" in s.text and s.chat_id == str(CHAT))
    assert "Клиентская" in alert.text
    buttons = [b["callback_data"] for row in alert.reply_markup["inline_keyboard"]
               for b in row if "callback_data" in b]  # fmt: skip
    assert buttons == [f"mute:{made['id']}@client2", f"unwatch:{made['id']}@client2"]
    fake.press(CHAT, USER, buttons[1])
    await until(lambda: "answerCallbackQuery" in fake.calls)  # (after the store's change)
    assert await client2.store.watched_ids(f"chat:{CHAT}") == [by_link["id"]]
    assert await service.watches["demo"].store.watched_ids(f"chat:{CHAT}") == []
    fake.say(CHAT, USER, "/list")
    await until(lambda: any("[client2] #" in t and "По ссылке" in t for t in fake.texts(CHAT)))


def test_accounts_in_the_config(tmp_path: Path) -> None:
    base = {"account": "a", "api_key": "k", "token": "t"}

    def load(data: dict[str, Any]) -> Any:
        return config_from_dict(data, source="n.toml", environ={})

    alone = load(
        {"accounts": {"one": base, "two": {**base, "account": "b", "watch": {"tasks": [5]}}}}
    )
    assert [(a.key, a.name, a.watch.tasks) for a in alone.watched_accounts] == [
        ("one", "one", []),
        ("two", "two", [5]),
    ]
    with pytest.raises(ConfigError, match=r"n.toml: accounts.a: the name of \[planfix\]"):
        load({"planfix": base, "accounts": {"a": {**base, "account": "b"}}})
    with pytest.raises(ConfigError, match=r"accounts.x y: a name of up to 32 letters"):
        load({"planfix": base, "accounts": {"x y": {**base, "account": "b"}}})
    with pytest.raises(ConfigError, match=r"accounts.two: the same PlanFix account as \[planfix\]"):
        load({"planfix": base, "accounts": {"two": {**base, "account": "A"}}})
    with pytest.raises(ConfigError, match=r"n.toml: planfix: required, missing"):
        load({"watch": {"tasks": [1]}})
    with pytest.raises(ConfigError, match=r"watch: belongs to \[planfix\]"):
        load({"accounts": {"one": base}, "watch": {"tasks": [1]}})
    with pytest.raises(ConfigError, match=r"routes\[0\].accounts: no account named 'b'"):
        load({"planfix": base, "routes": [{"accounts": ["b"], "channels": ["log"]}],
              "channels": {"log": {"type": "console"}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"set accounts.two.token, or accounts.two.login"):
        load({"planfix": base, "accounts": {"two": {"account": "b", "api_key": "k"}}})
    env = {"PLANFIX_NOTIFIER_ACCOUNTS_TWO_TOKEN": "from-env-token"}
    config = config_from_dict(
        {"planfix": base, "accounts": {"two": {"account": "b", "api_key": "k2"}}},
        source="n.toml",
        environ=env,
    )
    assert "from-env-token" in config.secrets() and "k2" in config.secrets()
    (tmp_path / "key").write_text("from-file-key\n")
    config = config_from_dict(
        {"accounts": {"two": {"account": "b", "api_key_file": "key", "token": "t"}}},
        source=str(tmp_path / "n.toml"),
        environ={},
    )
    assert config.watched_accounts[0].planfix.api_key.get_secret_value() == "from-file-key"
    # A shell allows no "-" in a variable's name: accounts.client-2's is …_CLIENT_2_….
    named: dict[str, Any] = {"client-2": {"account": "b", "api_key": "k2"}}
    two = {"planfix": base, "accounts": named}
    config = config_from_dict(
        two, source="n.toml", environ={"PLANFIX_NOTIFIER_ACCOUNTS_CLIENT_2_TOKEN": "t-shell"}
    )
    assert "t-shell" in config.secrets() and config.account_named("client-2").planfix.token
    with pytest.raises(ConfigError, match=r"_CLIENT-2_TOKEN and \S+_CLIENT_2_TOKEN both set "
                       r"accounts.client-2.token, differently"):  # fmt: skip
        config_from_dict(two, source="n.toml", environ={
            "PLANFIX_NOTIFIER_ACCOUNTS_CLIENT-2_TOKEN": "a", "PLANFIX_NOTIFIER_ACCOUNTS_CLIENT_2_TOKEN": "b"
        })  # fmt: skip
    named["client_2"] = {"account": "c", "api_key": "k3"}
    with pytest.raises(ConfigError, match=r"n.toml: PLANFIX_NOTIFIER_ACCOUNTS_CLIENT_2_TOKEN "
                       r"would set both accounts.client-2.token and accounts.client_2.token"):  # fmt: skip
        config_from_dict(
            two, source="n.toml", environ={"PLANFIX_NOTIFIER_ACCOUNTS_CLIENT_2_TOKEN": "t"}
        )


def test_each_account_raises_its_own_events_and_routes_keep_to_theirs(tmp_path: Path) -> None:
    """An account's watch.events (and the events its routes list) are its
    poller's; the service's own alerts (a channel failing) pass any route."""
    base = {"account": "a", "api_key": "k", "token": "t"}
    data = {
        "planfix": base,
        "watch": {"events": ["status_changed"]},
        "accounts": {"two": {**base, "account": "b", "watch": {"events": ["became_overdue"]}}},
        "state": {"path": str(tmp_path / "state.sqlite3")},
        "channels": {"log": {"type": "console"}, "ops": {"type": "console"}},
        "routes": [
            {"accounts": ["two"], "events": ["title_changed"], "channels": ["log"]},
            {"accounts": ["a"], "operator": True, "channels": ["ops"]},
        ],
    }
    service = Service(config_from_dict(data, source="test", environ={}))
    wanted = {name: set(w.poller.wanted) for name, w in service.watches.items()}
    assert wanted == {"a": {"status_changed"}, "two": {"became_overdue", "title_changed"}}
    failing = Event(EventKind.CHANNEL_FAILING, datetime.now(UTC), details={"channel": "log"})
    assert service.router.channel_names(failing) == ["ops"]  # (of no account)
    quota = Event(EventKind.QUOTA_EXHAUSTED, datetime.now(UTC), account="two")
    assert service.router.channel_names(quota) == []  # the operator's route is a's


async def test_a_reload_keeps_the_accounts_and_applies_their_watch_sets(
    tmp_path: Path, started: list[Service]
) -> None:
    base = {"account": "a", "api_key": "k", "token": "t", "endpoint": "http://127.0.0.1:9/xml/"}
    data: dict[str, Any] = {
        "planfix": base,
        "accounts": {"two": {**base, "account": "b", "watch": {"tasks": [5]}}},
        "state": {"path": str(tmp_path / "state.sqlite3")},
        "metrics": {"listen": ""},
    }
    service = Service(config_from_dict(data, source="test", environ={}))
    started.append(service)
    await service.load()
    data["accounts"]["two"]["watch"]["tasks"] = [5, 6]
    assert await service.reload(config_from_dict(data, source="test", environ={})) == []
    assert sorted(service.watches["two"].poller.records) == [5, 6]
    assert list(service.watches["a"].poller.records) == []
    data["accounts"]["three"] = {**base, "account": "c"}
    with pytest.raises(ValueError, match="one added, removed or renamed"):
        await service.reload(config_from_dict(data, source="test", environ={}))
    assert list(service.watches) == ["a", "two"]

    # [accounts.*] in another order are the same accounts; another first is not.
    tables = {n: {**base, "account": n, "watch": {"tasks": [5]}} for n in ("x", "y", "z")}
    alone = {"accounts": tables, "state": {"path": str(tmp_path / "s2.sqlite3")}}
    service = Service(config_from_dict(alone, source="test", environ={}))
    started.append(service)
    await service.load()
    alone["accounts"] = {"x": tables["x"], "z": tables["z"] | {"watch": {"tasks": [5, 6]}},
                         "y": tables["y"]}  # fmt: skip
    assert await service.reload(config_from_dict(alone, source="test", environ={})) == []
    assert sorted(service.watches["z"].poller.records) == [5, 6]
    assert list(service.watches) == ["x", "z", "y"]  # (as the config lists them now)
    alone["accounts"] = {"y": tables["y"], "x": tables["x"], "z": tables["z"]}
    with pytest.raises(ValueError, match="or another first"):  # (unnamed buttons are x's)
        await service.reload(config_from_dict(alone, source="test", environ={}))


def test_several_accounts_need_routes_by_ids_to_name_theirs() -> None:
    base = {"account": "a", "api_key": "k", "token": "t"}
    with pytest.raises(ConfigError, match=r"routes\[0\].tasks: ids are an account's own"):
        config_from_dict(
            {"planfix": base, "accounts": {"two": {**base, "account": "b"}},
             "channels": {"log": {"type": "console"}},
             "routes": [{"tasks": [5], "channels": ["log"]}]},
            source="n.toml", environ={},
        )  # fmt: skip
    with pytest.raises(ConfigError, match=r"accounts.ALL: a name of up to 32"):
        config_from_dict(
            {"planfix": base, "accounts": {"ALL": {**base, "account": "b"}}}, source="n", environ={}
        )


async def test_each_account_takes_pushes_at_its_own_path(
    emulator: Emulator,
    control: EmulatorControl,
    second: tuple[Emulator, EmulatorControl],
    telegram: TelegramServer,
    tmp_path: Path,
    started: list[Service],
) -> None:
    other, other_control = second
    task = control.create_task(title="Своя", status=1)["id"]
    other_control.create_task(title="Клиентская", status=1)
    data = two_accounts(emulator, other, telegram, tmp_path / "state.sqlite3", task)
    data["push"] = {"listen": "127.0.0.1:0", "secret": "s3cret-push-value"}
    config = config_from_dict(data, source="test", environ={})
    service = Service(config)
    started.append(service)
    await service.start()
    server = await _start_push(config, service)
    assert server is not None
    try:
        watches = service.watches.values()
        await until(lambda: all(w.poller.records[task].card is not None for w in watches))
        other_control.change_task(task, status=2)  # client2's task 1001, pushed
        async with httpx.AsyncClient() as http:
            base = f"http://127.0.0.1:{server.port}/planfix"
            for path in ("/client2", "", "/demo"):
                answer = await http.post(
                    base + path,
                    json={"task": task},
                    headers={"X-Notifier-Secret": "s3cret-push-value"},
                )
                assert answer.status_code == 200, path
        pushes = {name: w.push.stats.received for name, w in service.watches.items()}
        assert pushes == {"demo": 2, "client2": 1}
        await until(lambda: len(telegram.fake.texts(OTHER_CHAT)) == 1)  # read, and alerted
        assert "[client2]" in telegram.fake.texts(OTHER_CHAT)[0]
    finally:
        await server.stop()


async def test_the_operator_sees_each_account_on_the_page_in_status_and_quota(
    emulator: Emulator,
    control: EmulatorControl,
    second: tuple[Emulator, EmulatorControl],
    telegram: TelegramServer,
    tmp_path: Path,
    started: list[Service],
    capsys: pytest.CaptureFixture[str],
) -> None:
    other, other_control = second
    task = control.create_task(title="Отчёт своих", status=1)["id"]
    other_control.create_task(title="Отчёт клиента", status=1)  # (the same id)
    data = two_accounts(emulator, other, telegram, tmp_path / "state.sqlite3", task)
    token = "page-admin-token-0123456789"
    data["metrics"] = {"listen": "127.0.0.1:0", "admin_token": token}
    config = config_from_dict(data, source="test", environ={})
    service = Service(config)
    started.append(service)
    server = HttpServer("127.0.0.1:0", operator_routes(config, service))
    await server.start()
    try:
        await service.start()
        watches = service.watches.values()
        await until(lambda: all(w.poller.records[task].card is not None for w in watches))
        url = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient() as http:
            first = (await http.get(url + "/")).text
            assert 'id="account-list"' in first and "client2" in first
            assert "Отчёт своих" in first and "Отчёт клиента" not in first  # the first's tasks
            theirs = (await http.get(url + "/?account=client2")).text
            assert "Отчёт клиента" in theirs and "Отчёт своих" not in theirs
            unknown = await http.get(url + "/?account=nope")
            assert unknown.status_code == 404
            assert "no account &#x27;nope&#x27; (known: demo, client2)" in unknown.text
            on_demand = {n: w.ledger.today().on_demand for n, w in service.watches.items()}
            polled = await http.post(
                url + "/actions/poll", data={"task_id": task, "token": token, "account": "client2"}
            )
            assert polled.status_code == 303 and "account=client2" in polled.headers["Location"]
            client2 = service.watches["client2"]  # read at once, from client2's reserve
            await until(lambda: client2.ledger.today().on_demand > on_demand["client2"], within=5)
            assert service.watches["demo"].ledger.today().on_demand == on_demand["demo"]
            text = (await http.get(url + "/status.txt", params={"account": "client2"})).text
            assert "Отчёт клиента" in text and "Отчёт своих" not in text

        del data["routes"], data["bot"]  # (enough for the CLI: accounts, state, metrics)
        data["metrics"] = {"listen": f"127.0.0.1:{server.port}"}
        path = tmp_path / "notifier.toml"
        path.write_text(_toml(data), encoding="utf-8")
        code = await asyncio.to_thread(
            main, ["status", "--account", "client2", "--config", str(path)]
        )
        printed = capsys.readouterr().out
        assert code == 0 and "Отчёт клиента" in printed and "Отчёт своих" not in printed
        code = await asyncio.to_thread(
            main, ["quota", "--account", "client2", "--config", str(path)]
        )
        printed = capsys.readouterr().out
        used = re.search(r"^client2: quota \S+ \([^)]+\): (\d+) of 5000 used", printed, re.M)
        assert code == 0 and used and 0 < int(used[1]) <= other.account.quota_used, printed
        code = await asyncio.to_thread(main, ["quota", "--account", "nope", "--config", str(path)])
        assert code == 2 and "--account" in capsys.readouterr().err
    finally:
        await server.stop()


async def test_the_bot_watches_a_clients_project_and_an_admin_unwatches_in_its_account(
    emulator: Emulator,
    control: EmulatorControl,
    second: tuple[Emulator, EmulatorControl],
    telegram: TelegramServer,
    tmp_path: Path,
    started: list[Service],
) -> None:
    other, other_control = second
    task = control.create_task(title="Своя", status=1, project={"id": 12})["id"]
    ours = other_control.create_task(title="Проектная клиента", status=1, project={"id": 12})
    data = two_accounts(emulator, other, telegram, tmp_path / "state.sqlite3", task)
    data["bot"]["admins"] = [ADMIN]
    service = await start(started, data, bot=True)
    fake = telegram.fake
    demo, client2 = service.watches["demo"], service.watches["client2"]

    fake.say(CHAT, USER, "/watch client2 project 12")
    await until(lambda: any("Слежу за всеми задачами: [client2] проект 12" in t
                            for t in fake.texts(CHAT)))  # fmt: skip
    assert await client2.store.subscribed_projects(CHAT) == [12]
    assert await demo.store.subscribed_projects(CHAT) == []  # demo's project 12 is another
    await until(lambda: (r := client2.poller.records.get(ours["id"])) is not None and bool(r.card))
    other_control.change_task(ours["id"], status=2)
    await until(lambda: any("[client2]" in t and "Проектная клиента" in t
                            for t in fake.texts(CHAT)))  # fmt: skip
    fake.say(CHAT, USER, "/unwatch client2 project 12")
    await until(lambda: any("Больше не слежу за проектом 12" in t for t in fake.texts(CHAT)))
    assert await client2.store.subscribed_projects(CHAT) == []

    # An admin ends another chat's subscription, in the account named, and only there.
    assert ours["id"] == task  # (ids are an account's own)
    for watch in (demo, client2):
        await watch.store.subscribe(OTHER_CHAT, task, None, USER, 0.0)
    fake.say(CHAT, USER, f"/unwatch client2 {ours['general']} {OTHER_CHAT}")  # not an admin
    await until(lambda: any("Этот чат не следит" in t for t in fake.texts(CHAT)))
    assert await client2.store.watched_ids(f"chat:{OTHER_CHAT}") == [task]
    fake.say(CHAT, ADMIN, f"/unwatch client2 {ours['general']} {OTHER_CHAT}")
    await until(lambda: any("Больше не слежу за этой задачей" in t for t in fake.texts(CHAT)))
    assert await client2.store.watched_ids(f"chat:{OTHER_CHAT}") == []
    assert await demo.store.watched_ids(f"chat:{OTHER_CHAT}") == [task]


async def test_each_time_zone_has_its_midnight_wake(tmp_path: Path, started: list[Service]) -> None:
    """The quota comes back at each account's midnight: its pollers are woken
    then (the others' heartbeat would find it only within a minute)."""
    base = {"account": "a", "api_key": "k", "token": "t", "endpoint": "http://127.0.0.1:9/xml/"}
    data: dict[str, Any] = {
        "planfix": {**base, "timezone": "Europe/Moscow"},
        "accounts": {
            "two": {**base, "account": "b", "timezone": "America/New_York"},
            "three": {**base, "account": "c", "timezone": "Europe/Moscow"},
        },
        "state": {"path": str(tmp_path / "state.sqlite3")},
        "metrics": {"listen": ""},
    }
    service = await start(started, data)
    resets = {j.id: j for j in service.scheduler.get_jobs() if j.id.startswith("quota_reset")}
    assert sorted(resets) == ["quota_reset", "quota_reset:America/New_York"]
    for job_id, zone in (
        ("quota_reset", "Europe/Moscow"),
        ("quota_reset:America/New_York", "America/New_York"),
    ):
        at = resets[job_id].next_run_time.astimezone(ZoneInfo(zone))
        assert (at.hour, at.minute, at.second) == (0, 0, 5), job_id
    woken: list[str] = []
    service.wake = lambda watch=None: woken.append(watch.name if watch else "all")  # type: ignore[method-assign]
    await resets["quota_reset"].func()  # the job's body, run here
    assert woken == ["a", "three"]  # Moscow's accounts, and only they
