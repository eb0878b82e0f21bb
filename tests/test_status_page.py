"""The status page and /status.txt, over real sockets: emulator → service
(its metrics server) → fake Telegram; the page read and its actions posted
as a browser would (the browser itself: tests/test_status_browser.py)."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from notifier.alerts.events import Event, EventKind, TaskSummary
from notifier.app import Service
from notifier.cli import main
from notifier.config import ConfigError, config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from notifier.ops.overview import AccountLine, Overview, QuotaView, TaskRow
from notifier.store import ChannelBacklog, OutboxItem
from notifier.web.burndown import burndown_svg
from notifier.web.ops import operator_routes
from notifier.web.server import HttpServer
from notifier.web.status_page import render_page
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import CHAT, settings, until

TOKEN = "page-admin-token-0123456789"
HOSTILE = '<script>alert("x")</script> & <b>bold</b>'
Start = Callable[..., Awaitable[tuple[Service, str]]]


@pytest.fixture
async def page(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> AsyncIterator[Start]:
    control.configure(daily_quota=100_000)
    started: list[tuple[Service, HttpServer]] = []

    async def start(
        tasks: list[int], *, daily_quota: int | None = None, **metrics: Any
    ) -> tuple[Service, str]:
        data = settings(emulator, telegram, tmp_path / "state.sqlite3", tasks)
        if daily_quota is not None:  # a slow planner: only an action explains a quick read
            data["planfix"]["daily_quota"] = daily_quota
            data["watch"] |= {"feed_interval_s": 3600}
        data["metrics"] = {"listen": "127.0.0.1:0", **metrics}
        config = config_from_dict(data, source="test", environ={})
        service = Service(config)
        server = HttpServer("127.0.0.1:0", operator_routes(config, service))
        await server.start()
        await service.start()
        started.append((service, server))
        await until(lambda: all(r.card for r in service.poller.records.values()))
        return service, f"http://127.0.0.1:{server.port}"

    yield start
    for service, server in started:
        await server.stop()
        await service.stop()


async def test_the_page_lists_the_tasks_and_keeps_their_text_as_text(
    page: Start, control: EmulatorControl
) -> None:
    tasks = [control.create_task(title=t, status=1) for t in ("Договор", HOSTILE)]
    _, url = await page([t["id"] for t in tasks])
    async with httpx.AsyncClient() as http:
        answer = await http.get(url + "/")
    assert answer.status_code == 200
    html = answer.text
    for task in tasks:
        assert f'data-task="{task["id"]}"' in html
        assert f">{task['general']}<" in html  # its number, as people know it
    assert "Договор" in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html
    assert "<script>alert" not in html and "<b>bold" not in html
    policy = answer.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in policy and "frame-ancestors 'none'" in policy
    nonce = re.search(r"'nonce-([^']+)'", policy)
    assert nonce and html.count("<script") == 1 and f'nonce="{nonce[1]}"' in html
    assert "poll now" not in html  # read-only without metrics.admin_token


async def test_without_a_token_the_actions_are_refused(
    page: Start, control: EmulatorControl
) -> None:
    task = control.create_task(title="Только чтение", status=1)
    _, url = await page([task["id"]])
    async with httpx.AsyncClient() as http:
        answer = await http.post(url + "/actions/poll", data={"task_id": task["id"], "token": ""})
    assert answer.status_code == 403 and "metrics.admin_token" in answer.text


async def test_a_dead_letter_is_retried_with_the_token_and_only_with_it(
    page: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Письмо в никуда", status=1)
    service, url = await page([task["id"]], admin_token=TOKEN)
    telegram.fake.inject("forbidden", CHAT, times=-1)  # the bot was blocked: a dead letter
    control.change_task(task["id"], status=2)
    service.wake()

    async def one_dead() -> bool:
        return (await service.store.outbox_counts()).get("dead", 0) == 1

    await until(one_dead)
    dead = (await service.store.outbox_items("dead"))[0]
    telegram.fake.clear()
    retry = url + "/actions/retry"
    async with httpx.AsyncClient() as http:
        page_html = (await http.get(url + "/")).text
        assert '<table id="dead"><thead>' in page_html
        assert f'<tr data-id="{dead.id}">' in page_html and "blocked" in page_html
        wrong = await http.post(retry, data={"outbox_id": dead.id, "token": "x" * 20})
        missing = await http.post(retry, data={"outbox_id": dead.id})
        forged = await http.post(
            retry, data={"outbox_id": dead.id, "token": TOKEN},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        )  # fmt: skip
        assert [wrong.status_code, missing.status_code, forged.status_code] == [403, 403, 403]
        assert not telegram.fake.sent
        right = await http.post(retry, data={"outbox_id": dead.id, "token": TOKEN})
        assert right.status_code == 303
        assert "goes out again" in await said(http, url, right)
        await until(lambda: bool(telegram.fake.texts(CHAT)), within=10)
        again = await http.post(retry, data={"outbox_id": dead.id, "token": TOKEN})
        assert "refused: no dead letter" in await said(http, url, again)  # no longer dead
        forged_note = (await http.get(url + "/?note=pay-here&said=evil")).text
        assert 'id="said"' not in forged_note  # a link cannot put words on the page
    assert "Письмо в никуда" in telegram.fake.texts(CHAT)[0]
    assert (await service.store.outbox_counts()).get("dead", 0) == 0
    sample = service.metrics.registry.get_sample_value
    assert sample("planfix_notifier_alert_latency_seconds_count", {"channel": "team"}) == 1


async def test_poll_now_reads_the_task_at_once(
    page: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Проверь сейчас", status=1)
    _, url = await page([task["id"]], daily_quota=200, admin_token=TOKEN)  # 7 min a request
    await asyncio.sleep(1)  # the start-up round is over
    control.change_task(task["id"], status=2)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            url + "/actions/poll", data={"task_id": task["id"], "token": TOKEN}
        )
        assert answer.status_code == 303
        await until(lambda: bool(telegram.fake.texts(CHAT)), within=10)
        assert "is read within seconds" in await said(http, url, answer)
        unknown = await http.post(url + "/actions/poll", data={"task_id": 1, "token": TOKEN})
        assert "refused: task 1 is not watched" in await said(http, url, unknown)


async def said(http: httpx.AsyncClient, url: str, answer: httpx.Response) -> str:
    """What the page says after an action's redirect."""
    page_html = (await http.get(url + answer.headers["Location"])).text
    found = re.search(r'<p class="said[^"]*" id="said">([^<]*)</p>', page_html)
    assert found, "the page says nothing after the action"
    return html.unescape(found[1])


async def test_status_asks_the_running_service_and_says_when_none_answers(
    page: Start, control: EmulatorControl, capsys: pytest.CaptureFixture[str]
) -> None:
    task = control.create_task(title="Что с ней", status=1)
    service, url = await page([task["id"]])
    async with httpx.AsyncClient() as http:
        said = (await http.get(url + "/status.txt")).text
    zone = datetime.now(service.tz).strftime("%Z")
    assert "health: ok" in said and f"(times in {service.config.first.planfix.timezone})" in said
    assert zone in said  # every time a person reads carries the zone's label
    line = next(line for line in said.splitlines() if "Что с ней" in line)
    assert re.search(r"\((rotation|deadline|recheck)\)", line)  # the next planned poll

    config = tmp_config(service)
    code = await asyncio.to_thread(main, ["status", "--all", "--config", str(config)])
    printed = capsys.readouterr().out
    assert code == 0 and "health: unknown" in printed and "no service answers" in printed
    assert "Что с ней" in printed


def tmp_config(service: Service) -> Path:
    """The service's config as a file, its metrics on a port nothing listens on."""
    pf = service.config.first.planfix
    path = service.config.state.path.parent / "notifier.toml"
    path.write_text(
        f'[planfix]\naccount = "{pf.account}"\nendpoint = "{pf.endpoint}"\n'
        f'api_key = "{pf.api_key.get_secret_value()}"\n'
        f'token = "{pf.token.get_secret_value() if pf.token else ""}"\n'
        f'[state]\npath = "{service.config.state.path}"\n'
        f'[metrics]\nlisten = "127.0.0.1:1"\n',
        encoding="utf-8",
    )
    return path


def quota(hour_now: int, hours: list[int]) -> QuotaView:
    return QuotaView(date(2026, 1, 1), 2400, sum(hours), 0, tuple(hours), hour_now, 0.0, False)


@pytest.mark.parametrize("hour_now", [0, 7, 23])
def test_the_plot_has_one_bar_per_hour_so_far(hour_now: int) -> None:
    hours = [(h * 37) % 150 for h in range(24)]
    svg = burndown_svg(quota(hour_now, hours))
    bars = re.findall(r'<rect class="bar[^"]*" data-hour="(\d+)"', svg)
    assert [int(h) for h in bars] == list(range(hour_now + 1))
    assert svg.count('class="pace"') == 1  # the even pace: 2400 / 24 = 100 an hour
    over = re.findall(r'class="bar over" data-hour="(\d+)"', svg)
    assert [int(h) for h in over] == [h for h in range(hour_now + 1) if hours[h] > 100]


def test_a_short_admin_token_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    data = {"planfix": {"account": "a", "api_key": "k", "token": "t"},
            "metrics": {"admin_token": "short"}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"metrics\.admin_token: at least 16 characters"):
        config_from_dict(data, source="x.toml", environ={})


async def test_only_our_hosts_are_answered_and_odd_input_is_no_error(
    page: Start, control: EmulatorControl
) -> None:
    """DNS rebinding: a page at evil.example, its name pointed at 127.0.0.1,
    must not read the status page; an offset like "²" is no crash."""
    task = control.create_task(title="Чужим не видно", status=1)
    _, url = await page([task["id"]], admin_token=TOKEN, hosts=["notifier.internal"])
    port = url.rsplit(":", 1)[1]
    async with httpx.AsyncClient() as http:
        for host, status in [("evil.example", 421), (f"evil.example:{port}", 421),
                             (f"localhost:{port}", 200), (f"notifier.internal:{port}", 200),
                             (f"127.0.0.1:{port}", 200), (f"[::1]:{port}", 200)]:  # fmt: skip
            answer = await http.get(url + "/", headers={"Host": host})
            assert answer.status_code == status, host
            assert ("Чужим не видно" in answer.text) == (status == 200)
        assert (
            await http.get(url + "/status.txt", headers={"Host": "evil.example"})
        ).status_code == 421
        assert (await http.get(url + "/?offset=%C2%B2")).status_code == 200
        assert (
            await http.get(url + "/metrics", headers={"Host": "evil.example"})
        ).status_code == 200
        origin_only = await http.post(
            url + "/actions/poll", data={"task_id": task["id"], "token": TOKEN},
            headers={"Origin": "https://evil.example"},
        )  # fmt: skip
        assert origin_only.status_code == 403 and "another origin" in origin_only.text


def test_every_string_on_the_page_is_escaped() -> None:
    """Not only titles: status names, errors, recipients, channels, feed lines."""
    bad = "<img src=x onerror=alert(1)>"
    event = Event(EventKind.STATUS_CHANGED, datetime.now(UTC), 7,
                  TaskSummary(7, 70, bad, 1, bad, None, None, (), None, True))  # fmt: skip
    item = OutboxItem(1, bad, bad, "dead", 3, bad, 1.0, 1.0, 2.0, event)
    row = TaskRow(7, 70, bad, bad, None, True, 1.0, bad, 2, 3.0, "rotation", 4.0, (bad,))
    ov = Overview(
        at=10.0, tz="Europe/Moscow", running=True, healthy=False, why=bad, account=bad,
        accounts=(AccountLine(bad, 1, quota(3, [1] * 24), bad),),
        quota=quota(3, [1] * 24), feed=bad, push=bad, leases=(bad, bad), tasks=(row,),
        total_tasks=1, offset=0,
        channels=(ChannelBacklog(bad, 1, 1, 1, 1.0, bad),), pending=(item,), dead=(item,),
        recent=((1, event, [(bad, "sent")]),),
    )  # fmt: skip
    html_page = render_page(ov, nonce="n", actions=True, note=(bad, True))
    assert "<img" not in html_page and html_page.count("&lt;img src=x onerror=alert(1)&gt;") >= 17


def test_the_page_stays_off_a_listen_others_can_reach() -> None:
    base = {"planfix": {"account": "a", "api_key": "k", "token": "t"}}
    on = {"127.0.0.1:9464": True, "[::1]:9464": True, "localhost:9464": True,
          "0.0.0.0:9464": False, "10.0.0.5:9464": False, "": False}  # fmt: skip
    for listen, want in on.items():
        config = config_from_dict(base | {"metrics": {"listen": listen}}, source="t", environ={})
        assert config.metrics.page_on is want, listen
    config = config_from_dict(
        base | {"metrics": {"listen": "0.0.0.0:9464", "status_page": True}}, source="t", environ={}
    )
    assert config.metrics.page_on
