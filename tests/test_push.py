"""Push: PlanFix's scenario requests wake the poller. In real time, over real
sockets: emulator → service (push listener) → fake Telegram. The planner is
made slow (200 requests a day, the feed hourly), so that only the push can
explain an alert within seconds."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from notifier.ops.overview import push_line
from notifier.web.push import MAX_BODY, PushFormatError, parse_push, serve_push
from notifier.web.server import HttpServer
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import settings, until
from tests.watch.test_poller import Harness, harness

__all__ = ["harness"]  # the fixture

SECRET = "s3cret-push-value"
HEADER = {"X-Notifier-Secret": SECRET}
Start = Callable[..., Awaitable[tuple[Service, str]]]


@pytest.fixture
async def pushed(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> AsyncIterator[Start]:
    control.configure(daily_quota=100_000)
    started: list[tuple[Service, HttpServer]] = []

    async def start(tasks: list[int], **push: Any) -> tuple[Service, str]:
        data = settings(emulator, telegram, tmp_path / "state.sqlite3", tasks)
        data["planfix"]["daily_quota"] = 200  # a request every 7 minutes: only a push is quick
        data["watch"] = {"tasks": tasks, "feed_interval_s": 3600}
        data["push"] = {"listen": "127.0.0.1:0", "secret": SECRET, "min_interval_s": 5, **push}
        config = config_from_dict(data, source="test", environ={})
        service = Service(config)
        assert service.push is not None
        server = await serve_push(config.push, service.push, service.metrics.pushes_seen)
        await service.start()
        started.append((service, server))
        await until(lambda: all(r.card for r in service.poller.records.values()))
        await asyncio.sleep(1)  # the start-up round (baselines, the feed's first look) is over
        return service, f"http://127.0.0.1:{server.port}/planfix"

    yield start
    for service, server in started:
        await server.stop()
        await service.stop()


def reads(control: EmulatorControl) -> int:
    requests = control.state()["requests"]
    return int(requests.get("task.get", 0) + requests.get("task.getMulti", 0))


async def test_a_push_brings_the_alert_in_seconds_for_one_read(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Срочный договор", status=1)
    _, url = await pushed([task["id"]])
    before = reads(control)
    control.change_task(task["id"], status=2)
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, json={"number": task["general"]}, headers=HEADER)
    assert answer.status_code == 200
    await until(lambda: bool(telegram.fake.sent), within=5)
    assert "Срочный договор" in telegram.fake.sent[0].text
    assert reads(control) - before == 1


async def test_a_burst_of_pushes_costs_one_read_per_task(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    tasks = [control.create_task(title=f"Пачка {i}", status=1) for i in range(3)]
    _, url = await pushed([t["id"] for t in tasks])
    before = reads(control)
    for task in tasks:
        control.change_task(task["id"], status=2)
    async with httpx.AsyncClient() as http:
        answers = await asyncio.gather(
            *(
                http.post(url, data={"task": str(tasks[i % 3]["id"])}, headers=HEADER)
                for i in range(300)
            )
        )
    assert {a.status_code for a in answers} == {200}

    def told() -> list[int]:
        text = "".join(s.text for s in telegram.fake.sent)
        return [text.count(task["title"]) for task in tasks]

    await until(lambda: told() == [1, 1, 1], within=5)
    await asyncio.sleep(6)  # past min_interval_s: the read owed to the burst's tail is made
    assert reads(control) - before <= 2  # one getMulti (two where one went mid-burst)
    assert told() == [1, 1, 1]


async def test_forged_pushes_cost_no_request_and_one_log_line(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Чужой пуш", status=1)
    _, url = await pushed([task["id"]])
    control.change_task(task["id"], status=2)
    before = control.state()["requests"]
    with structlog.testing.capture_logs() as logs:
        async with httpx.AsyncClient() as http:
            answers = [
                await http.post(url, json={"task": task["id"]}, headers=headers)
                for headers in ({}, {"X-Notifier-Secret": "forged-9f3a"}) * 100
            ]
    assert {a.status_code for a in answers} == {401}
    await asyncio.sleep(1)
    assert control.state()["requests"] == before
    assert telegram.fake.sent == []
    refused = [line for line in logs if line["event"].startswith("push refused")]
    assert len(refused) == 1 and refused[0]["source"] == "127.0.0.1"
    assert SECRET not in str(logs) and "forged-9f3a" not in str(logs)


async def test_bad_pushes_get_a_clear_answer_and_good_ones_any_shape(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Форматы", status=1)
    _, url = await pushed([task["id"]])
    async with httpx.AsyncClient() as http:
        big = await http.post(url, content=b"x" * (MAX_BODY + 1), headers=HEADER)
        assert big.status_code == 413
        for body, reason in (
            (b"{not json", "not JSON"),
            (b"[418]", "not an object"),
            (b'{"title": "x"}', "no task"),
            (b'{"number": "abc"}', "'abc' is not a number of a task"),
            (b'{"task": -5}', "'-5' is not an id of a task"),
        ):
            answer = await http.post(url, content=body, headers=HEADER)
            assert answer.status_code == 400 and reason in answer.text, (body, answer.text)
            assert answer.text.count("\n") == 1
        before = reads(control)
        control.change_task(task["id"], status=2)
        query = await http.post(url, params={"number": task["general"]}, headers=HEADER)
        assert query.status_code == 200
        await until(lambda: len(telegram.fake.sent) == 1, within=5)
        await asyncio.sleep(5)  # past min_interval_s
        control.change_task(task["id"], status=1)
        form = await http.post(url, data={"number": f"#{task['general']}"}, headers=HEADER)
        assert form.status_code == 200
        await until(lambda: len(telegram.fake.sent) == 2, within=5)
    assert reads(control) - before == 2


async def test_a_task_in_no_watch_set_is_ignored_unless_auto_watch(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    watched = control.create_task(title="Своя", status=1)
    stranger = control.create_task(title="Чужая", status=1)
    service, url = await pushed([watched["id"]])
    before = reads(control)
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, json={"task": stranger["id"]}, headers=HEADER)
    assert answer.status_code == 200
    await asyncio.sleep(1)
    assert reads(control) == before and stranger["id"] not in service.poller.records
    assert service.push is not None and service.push.stats.ignored == 1


async def test_auto_watch_takes_a_pushed_task_in_with_a_baseline(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    watched = control.create_task(title="Своя", status=1)
    stranger = control.create_task(title="Новенькая", status=1)
    service, url = await pushed([watched["id"]], auto_watch=True)
    async with httpx.AsyncClient() as http:
        await http.post(url, json={"number": stranger["general"]}, headers=HEADER)
    await until(lambda: stranger["id"] in service.poller.records, within=5)
    await until(lambda: service.poller.records[stranger["id"]].card is not None, within=5)
    assert telegram.fake.sent == []  # a baseline raises nothing
    control.change_task(stranger["id"], status=2)
    await asyncio.sleep(5)  # past min_interval_s
    async with httpx.AsyncClient() as http:
        await http.post(url, json={"task": stranger["id"]}, headers=HEADER)
    await until(lambda: len(telegram.fake.sent) == 1, within=5)


async def test_with_the_reserve_spent_a_pushed_task_goes_with_the_planners_next_request(
    harness: Harness,
) -> None:
    """No on-demand reserve left (here: none at all): the push costs nothing
    extra; the task goes first in the planner's next request, and the
    service says pushes wait for the planner until then."""
    harness.control.configure(daily_quota=2000, supports_multi=False)
    tasks = [harness.control.create_task(title=f"Резерв {i}", status=1)["id"] for i in range(50)]
    service = await harness.service(
        tasks,
        watch={"quota_reserve": 0},
        push={"listen": "127.0.0.1:0", "secret": SECRET},
        daily_quota=2000,
    )
    await harness.settle(service, 900)
    target = max(service.poller.records.values(), key=lambda r: r.last_poll_at or 0).task_id
    harness.control.change_task(target, silent=True, status=2)  # no feed shows it
    assert service.push is not None and service.push.offer(task_id=target)
    await service.poller.read_pushed()  # the push is taken, and left to the planner
    assert service.push.stats.waiting_for_planner == 1
    await service.refresh_gauges()  # what `status` reads
    said = await push_line(service.store, service.config)
    assert "1 pushed tasks wait for the planner (the on-demand reserve is spent" in said
    await harness.settle(service, 120)  # a request every ~45 s
    assert [e.task_id for e in harness.events] == [target]
    assert service.push.stats.waiting_for_planner == 0
    assert service.ledger.today().on_demand == 0


async def test_the_emulator_pushes_as_planfix_does_and_the_alert_follows(
    pushed: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    task = control.create_task(title="Сценарий", status=1)
    _, url = await pushed([task["id"]])
    control.configure(push_url=url, push_secret=SECRET)
    control.change_task(task["id"], status=2)
    await until(lambda: bool(telegram.fake.sent), within=5)
    assert "Сценарий" in telegram.fake.sent[0].text
    assert control.state()["pushes"] == 1


async def test_the_emulator_retries_a_refused_push_on_its_schedule_then_gives_up(
    pushed: Start, emulator: Emulator, control: EmulatorControl
) -> None:
    task = control.create_task(title="Отказ", status=1)
    _, url = await pushed([task["id"]])
    control.configure(push_url=url, push_secret="not-the-secret", push_retry_s=[0.2, 0.4])
    control.change_task(task["id"], status=2)
    await until(lambda: control.state()["pushes"] == 3, within=5)
    await asyncio.sleep(1)
    log = emulator.account.push_log
    assert [(e["attempt"], e["status"]) for e in log] == [(0, 401), (1, 401), (2, 401)]
    assert 0.35 < log[2]["at"] - log[1]["at"] < 1.0  # the second retry waits 0.4 s


async def push_test(config: Path, *args: str) -> tuple[int, str]:
    """``planfix-notifier push-test``, as a process (this loop serves the endpoint)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", "push-test", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


async def test_push_test_says_what_the_endpoint_answered(
    pushed: Start, emulator: Emulator, control: EmulatorControl, tmp_path: Path
) -> None:
    task = control.create_task(title="Проверка", status=1)
    _, url = await pushed([task["id"]])
    port = url.split(":")[2].split("/")[0]
    settings = emulator.account.settings
    config = tmp_path / "push.toml"
    text = f"""
[planfix]
account = "{settings.account}"
endpoint = "{emulator.endpoint}"
api_key = "{settings.api_key}"
token = "{settings.token}"
[state]
path = "{tmp_path / "other.sqlite3"}"
[watch]
tasks = [{task["id"]}]
[push]
listen = "0.0.0.0:{port}"
secret = "{SECRET}"
"""
    config.write_text(text, encoding="utf-8")
    code, out = await push_test(config)
    assert code == 0 and "accepted" in out, out
    assert SECRET not in out
    config.write_text(text.replace(SECRET, "a-stale-secret"), encoding="utf-8")
    code, out = await push_test(config, "--number", str(task["general"]))
    assert code == 1 and "401" in out and "the secret differs" in out, out
    code, out = await push_test(config, "--url", "http://127.0.0.1:9/planfix")
    assert code == 1 and "no answer" in out, out


@pytest.mark.parametrize(
    "body",
    [
        "&".join(f"f{i}=1" for i in range(60)).encode(),  # over parse_qs's field cap
        b'{"number": ' + b"1" * 5000 + b"}",  # over int()'s digit cap
        ("number=" + "1" * 5000).encode(),
        "number=²".encode(),  # a digit to str.isdigit, not to int()
        b"[" * 5000,  # nesting past the recursion limit
    ],
)
def test_any_unreadable_body_is_a_400_reason_never_an_exception(body: bytes) -> None:
    with pytest.raises(PushFormatError):
        parse_push({}, "", body)


async def test_a_body_in_pieces_is_read_whole_and_a_chunked_one_capped(
    pushed: Start, control: EmulatorControl
) -> None:
    task = control.create_task(title="Куски", status=1)
    _, url = await pushed([task["id"]])
    port = int(url.split(":")[2].split("/")[0])

    async def raw(*parts: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        answer = await reader.read(200)
        writer.close()
        return answer

    body = json.dumps({"task": task["id"]}).encode()
    head = (
        f"POST /planfix HTTP/1.1\r\nHost: x\r\nX-Notifier-Secret: {SECRET}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert (await raw(head + body[:8], body[8:])).startswith(b"HTTP/1.1 200")
    chunked = (
        f"POST /planfix HTTP/1.1\r\nHost: x\r\nX-Notifier-Secret: {SECRET}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    small, big = b"number=1", b"x" * (MAX_BODY + 10)
    parts = [b"%x\r\n%s\r\n" % (len(small), small), b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)]
    assert (await raw(chunked, *parts)).startswith(b"HTTP/1.1 413")
    weird = b"POST /planfix HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
    answer = await raw(weird + b"X-Notifier-Secret: \xff\xfe\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 401")


async def test_a_push_while_the_quota_is_spent_waits_without_spinning(harness: Harness) -> None:
    """The quota blocks every request: a pending push must not make the poll
    job come back at once (it came back every 50 ms until the reset)."""
    tasks = [harness.control.create_task(title="Квота", status=1)["id"]]
    service = await harness.service(tasks, push={"listen": "127.0.0.1:0", "secret": SECRET})
    await harness.settle(service, 120)
    service.ledger.today().exhausted = True  # as after a 0007
    assert service.push is not None and service.push.offer(task_id=tasks[0])
    wake = await service.poller.tick()
    assert wake > harness.clock.now + 60


async def test_a_pushed_task_left_unread_by_the_planners_request_keeps_its_turn(
    harness: Harness,
) -> None:
    """The reserve is spent, the pushed task goes with the planner's next
    request, and PlanFix answers that request with 0007: the task stays first
    in line for the request after the reset (it was dropped)."""
    harness.control.configure(daily_quota=2000, supports_multi=False)
    tasks = [harness.control.create_task(title=f"Очередь {i}", status=1)["id"] for i in range(5)]
    service = await harness.service(
        tasks, watch={"quota_reserve": 0, "feed_interval_s": 0}, push={"listen": "127.0.0.1:0", "secret": SECRET},
        daily_quota=2000,
    )  # fmt: skip
    await harness.settle(service, 300)
    assert service.push is not None and service.push.offer(task_id=tasks[3])
    await service.poller.read_pushed()
    assert service.push.stats.waiting_for_planner == 1
    harness.control.inject("error", code="0007", times=1)
    harness.advance(60)
    requests = harness.control.state()["requests"].get("task.get", 0)
    await service.poller.tick(max_requests=1)
    assert harness.control.state()["requests"]["task.get"] == requests + 1
    assert service.ledger.exhausted  # the planner's request went, and PlanFix said no
    assert service.push.hurried(5) == [tasks[3]]  # still first in line
