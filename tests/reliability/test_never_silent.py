"""Ways the service could stop alerting without a word (issue "Never silent"):
each case is a fault that once silenced it, run against the real emulator."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings
from notifier.alerts.events import Event, EventKind
from notifier.channels.base import RetryLater
from notifier.emulator import Emulator, EmulatorControl
from notifier.planfix.errors import PlanfixError, QuotaExhaustedError
from notifier.store import Store, StoreError
from tests.alerts.recording import Recording
from tests.alerts.samples import MSK, channel, event, summary
from tests.fakes.smtp import SmtpServer, free_port
from tests.fakes.telegram import TelegramServer
from tests.reliability.test_planfix_faults import task_events
from tests.test_delivery import CHAT, _toml, baselines
from tests.test_operations import get, run_cli, service_config, wait_for
from tests.watch.clock import FakeClock
from tests.watch.test_poller import Harness

GUARD_S = 60  # a case that hangs fails here instead of blocking the suite


async def test_a_trickling_answer_is_cut_at_timeout_s(harness: Harness) -> None:
    """``timeout_s`` caps the whole exchange, not each read: a body trickled at
    one byte every half second (minutes in all) is given up after ``timeout_s``."""
    task = harness.control.create_task(title="Медленный ответ", status=1)
    service = await harness.service([task["id"]], timeout_s=1)
    await harness.settle(service, 600)
    harness.control.change_task(task["id"], status=2)
    harness.control.inject("trickle", delay_s=0.5, times=1)
    await asyncio.wait_for(harness.settle(service, 3600), GUARD_S)
    assert not harness.control.state()["faults"]  # the trickle was served
    assert task_events(harness) == [EventKind.STATUS_CHANGED]


async def test_one_unreadable_card_fails_only_its_task(harness: Harness) -> None:
    """A card PlanFix got wrong (a date in a shape we cannot read) inside a
    task.getMulti answer: its neighbours are read and alerted as usual; the bad
    one is asked alone with task.get and its error names the task and the field."""
    tasks = [harness.control.create_task(title=f"Пачка {n}", status=1)["id"] for n in range(5)]
    service = await harness.service(tasks)
    await harness.settle(service, 600)
    bad = tasks[2]
    harness.control.change_task(bad, garbled={"endTime": "завтра к обеду"})
    for task_id in tasks:
        harness.control.change_task(task_id, status=2)
    await harness.settle(service, 3600)
    changed = sorted(e.task_id or 0 for e in harness.events if e.kind is EventKind.STATUS_CHANGED)
    assert changed == sorted(set(tasks) - {bad})
    record = service.poller.records[bad]
    assert record.last_result == "error"
    assert f"task {bad}" in (record.last_error or "") and "endTime" in (record.last_error or "")
    asked_alone = harness.control.state()["requests"].get("task.get", 0)
    assert asked_alone >= 1


def test_a_second_instance_on_one_state_is_refused(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """Two services on one state file sent every alert twice and under-counted
    the quota. The second one now exits 2 with one line naming the first's PID;
    the read-only ``status`` still works beside the running service."""
    task = control.create_task(title="Один экземпляр", status=1)["id"]
    config = tmp_path / "notifier.toml"
    data = service_config(emulator, telegram, tmp_path, [task], metrics={"listen": ""})
    config.write_text(_toml(data))
    first = subprocess.Popen(
        [sys.executable, "-m", "notifier", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: baselines(tmp_path / "state.sqlite3") == 1)
        second = run_cli("run", "--config", str(config))
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert f"PID {first.pid}" in line and "state.sqlite3" in line
        status = run_cli("status", "--config", str(config))
        assert status.returncode == 0 and "Один экземпляр" in status.stdout
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    assert first.returncode == 0
    again = subprocess.Popen(  # the lock went with the process that held it
        [sys.executable, "-m", "notifier", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        lock = tmp_path / "state.sqlite3.lock"
        wait_for(lambda: lock.read_text().strip() == str(again.pid), within=30)
        assert again.poll() is None
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)


async def test_recovery_after_an_outage_is_at_once(harness: Harness) -> None:
    """Ten minutes of garbage from PlanFix, then it is fine: a change made then
    is alerted within 90 s (per-task back-off held every task 10, 20, 40, 80,
    160, 320 s … up to an hour after the outage), and the outage itself was
    probed with one request at a time, at most 60 s apart."""
    tasks = [harness.control.create_task(title=f"Сбой {n}", status=1)["id"] for n in range(30)]
    service = await harness.service(tasks, requests_per_second=20, timeout_s=0.3)
    await harness.settle(service, 600)
    before = sum(harness.control.state()["requests"].values())
    for kind in ("http_error", "html", "malformed", "reset"):
        harness.control.inject(kind, times=-1)
        await harness.settle(service, 150)
        harness.control.clear_faults()
    during = sum(harness.control.state()["requests"].values()) - before
    assert during <= 15  # probes 10, 20, 40, 60, 60 … s apart, not a request per task
    harness.control.change_task(tasks[7], status=2)
    await harness.settle(service, 90)
    assert task_events(harness) == [EventKind.STATUS_CHANGED]


async def test_one_remaining_zero_header_is_advice_not_a_day_off(harness: Harness) -> None:
    """PlanFix refreshes X-RateLimit-Remaining only every ~10 minutes: one
    stale 0 used to stop polling until midnight, silently, and across a
    restart. Now it blocks until the next probe, and while it blocks /healthz
    says why and the operator hears of it once."""
    task = harness.control.create_task(title="Заголовок", status=1)["id"]
    service = await harness.service([task], requests_per_second=20)
    await harness.settle(service, 600)
    harness.control.inject("stale_remaining", times=1)
    await harness.settle(service, 120)
    healthy, reason = service.health()
    assert not healthy and "X-RateLimit-Remaining" in reason
    assert harness.kinds() == ["quota_exhausted"]
    harness.control.change_task(task, status=2)
    await harness.settle(service, 15 * 60)  # the probe goes within ten minutes
    assert harness.kinds() == ["quota_exhausted", "quota_restored", "status_changed"]
    assert service.health() == (True, "")


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running(
    data: dict[str, Any], tmp_path: Path, tasks: int = 1
) -> Iterator[tuple[Path, Path, subprocess.Popen[bytes]]]:
    """``run`` on ``data`` as a process, once it holds its tasks' baselines:
    (config file, log file, process); stopped on the way out."""
    config, log = tmp_path / "notifier.toml", tmp_path / "service.log"
    config.write_text(_toml(data))
    process = _start(config, log)
    try:
        wait_for(lambda: baselines(tmp_path / "state.sqlite3") == tasks, within=30)
        yield config, log, process
    finally:
        _stop(process)


BROKEN_TEMPLATES = {
    "syntax": ("{% if %}\n", "Expected an expression"),
    "render": ("{{ items[0].event.details.nope.upper() }}\n", "cannot render a sample alert"),
}


def test_a_reload_to_a_broken_channel_keeps_the_running_one(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """A SIGHUP to a config whose bot token file is empty, or whose template
    override cannot render, used to stop every delivery: reload stopped the
    workers before building the new channels. Now the new config is built
    completely first; on any error the running one stays, with one log line."""
    task = control.create_task(title="Перезагрузка", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task], metrics={"listen": ""})
    with running(data, tmp_path) as (config, log, service):
        (tmp_path / "empty_token").write_text("\n")
        broken = {**data["channels"]["team"], "bot_token_file": str(tmp_path / "empty_token")}
        del broken["bot_token"]
        config.write_text(_toml({**data, "channels": {"team": broken}}))
        service.send_signal(signal.SIGHUP)
        wait_for(lambda: "refused" in log.read_text())
        templates = tmp_path / "templates" / "ru"
        templates.mkdir(parents=True)
        (templates / "telegram.html.j2").write_text(BROKEN_TEMPLATES["render"][0])
        config.write_text(
            _toml({**data, "alerts": {**data["alerts"], "templates": str(templates.parent)}})
        )
        service.send_signal(signal.SIGHUP)
        wait_for(lambda: log.read_text().count("refused") == 2)
        control.change_task(task, status=2)
        wait_for(lambda: any("Перезагрузка" in m.text for m in telegram.fake.sent), within=30)
    refusals = [line for line in log.read_text().splitlines() if "refused" in line]
    assert "channels.team.bot_token_file" in refusals[0] and "is empty" in refusals[0]
    assert "telegram.html.j2:1" in refusals[1]


@pytest.mark.parametrize("broken", sorted(BROKEN_TEMPLATES))
def test_a_template_that_cannot_work_fails_check_and_run(
    broken: str, emulator: Emulator, telegram: TelegramServer, tmp_path: Path
) -> None:
    """An override that does not compile, or compiles but cannot render an
    alert, passed check and reload; every alert then failed for two days."""
    text, said = BROKEN_TEMPLATES[broken]
    templates = tmp_path / "templates"
    (templates / "ru").mkdir(parents=True)
    (templates / "ru" / "message.txt.j2").write_text("первая строка\n" + text)
    data = service_config(emulator, telegram, tmp_path, [1], metrics={"listen": ""})
    data["alerts"]["templates"] = str(templates)
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 1
    assert f"{templates / 'ru' / 'message.txt.j2'}:2" in check.stdout and said in check.stdout
    run = run_cli("run", "--config", str(config))
    assert run.returncode == 2
    (line,) = run.stderr.strip().splitlines()
    assert "alerts.templates" in line and "message.txt.j2:2" in line


def test_sigterm_during_a_send_lets_it_finish_instead_of_sending_it_twice(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """SIGTERM while Telegram was slowly answering a send: stop cancelled the
    send and the drain sent it again (two copies, three with a slower one)."""
    task = control.create_task(title="Остановка посреди отправки", status=1)["id"]
    control.configure(daily_quota=100_000)  # a poll a second, whatever the hour: a day's
    emulator.account.settings.daily_quota = 100_000  # budget early in it is spread thin
    data = service_config(emulator, telegram, tmp_path, [task], metrics={"listen": ""})
    with running(data, tmp_path) as (_, _, service):
        telegram.fake.inject("slow", CHAT, delay_s=2.0, times=-1)
        control.change_task(task, status=2)
        wait_for(lambda: len(telegram.fake.texts(CHAT)) == 1)  # received, not yet answered
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    assert service.returncode == 0
    assert len(telegram.fake.texts(CHAT)) == 1


class DiskFullStore(Store):
    """The state file on a disk that fills up: recording a delivery as sent
    fails the way SQLite does when the disk is full, ``full_for`` times. (A
    full disk cannot be made safely on a shared machine; the store's other
    writes and every read are real.)"""

    full_for = 0

    async def outbox_sent(self, ids: Sequence[int], now: float) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise StoreError(f"{self.where}: database or disk is full")
        await super().outbox_sent(ids, now)


async def test_a_send_whose_result_cannot_be_recorded_is_not_sent_again(tmp_path: Path) -> None:
    """The disk filled while a delivery was in flight: marking it sent failed,
    and the same alert went out again on every pass until space returned."""
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    store = DiskFullStore(tmp_path / "state.sqlite3")
    team = Recording("team")
    sender = Dispatcher(store, {"team": team}, DispatchSettings(), clock=clock)
    await store.add_events([event()], [[("team", "r1")]], queued_at=clock.now)
    store.full_for = 3
    for _ in range(5):
        with contextlib.suppress(StoreError):
            await sender.flush("team")
        clock.advance(60)
    assert len(team.sent) == 1
    assert await store.outbox_counts() == {"sent": 1}  # recorded once the disk had room


@pytest.mark.parametrize("fault", ["retry_after", "forbidden"])
async def test_a_digest_cut_short_records_the_parts_that_went_out(
    fault: str, telegram: TelegramServer, tmp_path: Path
) -> None:
    """A digest split into several Telegram messages, with a 429 (or a block)
    on part 3: parts 1-2 used to be sent again (5 messages, 3 distinct), and
    a failure for good dead-lettered events that had been delivered."""
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    store = Store(tmp_path / "state.sqlite3")
    team = channel("team", {"type": "telegram", "bot_token": telegram.fake.token,
                            "chat_ids": [CHAT], "api_url": telegram.url, "per_chat_per_s": 50})  # fmt: skip
    sender = Dispatcher(store, {"team": team}, DispatchSettings(retry_base_s=1), clock=clock)
    events = [event(task_id=3000 + n, task=summary(3000 + n, title=f"Пункт {n} " + "ж" * 150))
              for n in range(60)]  # fmt: skip
    parts = team.renderer.telegram_chunks(events, 4096)
    assert len(parts) >= 4
    await store.add_events(events, [[("team", str(CHAT))]] * len(events), queued_at=clock.now)
    telegram.fake.inject(fault, CHAT, after=2, times=1, retry_after=1)
    for _ in range(4):
        await sender.flush("team")
        clock.advance(5)
    sent = telegram.fake.texts(CHAT)
    assert len(sent) == len(set(sent))  # nothing went out twice
    delivered_first = parts[1][1]  # events complete in parts 1-2
    counts = await store.outbox_counts()
    if fault == "retry_after":
        assert len(sent) == len(parts) and counts == {"sent": 60}
    else:
        assert counts == {"sent": delivered_first, "dead": 60 - delivered_first}
    await team.aclose()


def test_telegram_unreachable_at_start_does_not_stop_the_service(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    """With [bot] set and Telegram unreachable at start, run died with a
    110-line traceback (under Restart=on-failure: a loop that also stopped
    polling and e-mail). Now it starts without the bot, retries the bot in the
    background and tells the operator through the channels that work."""
    task = control.create_task(title="Без бота", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task], metrics={"listen": ""})
    data["channels"]["team"]["api_url"] = f"http://127.0.0.1:{free_port()}"  # nobody there
    data["channels"]["mail"] = smtp_plain.options(group=False)
    data["bot"] = {"channel": "team", "allowed_chats": [CHAT], "poll_timeout_s": 1}
    with running(data, tmp_path) as (_, log, service):
        control.change_task(task, status=2)
        wait_for(lambda: len(smtp_plain.inbox.messages) >= 2, within=30)
        subjects = " ".join(str(m["Subject"]) for m in smtp_plain.inbox.messages)
        assert "Без бота" in subjects and "team" in subjects  # the alert, and the bot's trouble
        assert service.poll() is None
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("trap", ["state is a folder", "state folder unwritable", "port taken"])
def test_every_start_up_failure_is_one_line_and_exit_2(
    trap: str, emulator: Emulator, telegram: TelegramServer, tmp_path: Path
) -> None:
    """A state path that is a folder, a state folder that cannot be written
    and a metrics port already taken gave a traceback and exit 1."""
    data = service_config(emulator, telegram, tmp_path, [1])
    with contextlib.ExitStack() as stack:
        if trap == "state is a folder":
            (tmp_path / "folder").mkdir()
            data["state"]["path"] = str(tmp_path / "folder")
            said = f"{tmp_path / 'folder'}: cannot open it"
        elif trap == "state folder unwritable":
            data["state"]["path"] = "/proc/planfix-notifier/state.sqlite3"  # not even root may
            said = "/proc/planfix-notifier/state.sqlite3"
        else:
            taken = stack.enter_context(socket.socket())
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            data["metrics"]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
            said = "metrics.listen"
        config = tmp_path / "notifier.toml"
        config.write_text(_toml(data))
        done = run_cli("run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert said in line and "Traceback" not in done.stderr


async def test_a_state_file_that_cannot_be_written_turns_health_503(harness: Harness) -> None:
    """A state file that broke under a running service: it went on without a
    word while /healthz said 200. (SQLite keeps serving a damaged file from its
    cache for a while, so the store here fails the way SQLite then does.)"""
    task = harness.control.create_task(title="Порча", status=1)["id"]
    service = await harness.service([task])
    # The poll job as the scheduler runs it, on the harness's clock (the real
    # scheduler would run on the real one).
    service.scheduler.modify_job = lambda *args, **kwargs: None
    await service._poll_job(service.main)
    assert service.health() == (True, "")
    real = service.store.save_polls

    async def broken(*args: object, **kwargs: object) -> list[tuple[int, Event]]:
        raise StoreError("state file x: database disk image is malformed")

    service.store.save_polls = broken  # type: ignore[method-assign]
    harness.control.change_task(task, status=2)
    harness.advance(600)
    await service._poll_job(service.main)
    healthy, reason = service.health()
    assert not healthy and "state cannot be written" in reason and "malformed" in reason
    service.store.save_polls = real  # type: ignore[method-assign]
    harness.advance(600)
    await service._poll_job(service.main)
    assert service.health() == (True, "")
    assert harness.kinds() == ["status_changed"]  # found again once it could be saved


def test_the_heartbeat_url_hears_of_healthy_rounds_at_most_once_a_minute(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """A dead man's switch: a monitor that hears nothing knows the host died."""
    beats: list[str] = []

    class Monitor(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            beats.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    monitor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Monitor)
    threading.Thread(target=monitor.serve_forever, daemon=True).start()
    task = control.create_task(title="Пульс", status=1)["id"]
    url = f"http://127.0.0.1:{monitor.server_address[1]}/ping/abc"
    data = service_config(
        emulator, telegram, tmp_path, [task], metrics={"listen": "", "heartbeat_url": url}
    )
    try:
        with running(data, tmp_path):
            wait_for(lambda: beats == ["/ping/abc"], within=30)
            time.sleep(5)  # many poll rounds (min_interval_s = 1), still one beat a minute
            assert beats == ["/ping/abc"]
    finally:
        monitor.shutdown()


async def test_a_channel_that_delivers_nothing_while_due_is_unhealthy(tmp_path: Path) -> None:
    """A delivery retried forever wrote nothing at WARNING and /healthz stayed 200."""
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    store = Store(tmp_path / "state.sqlite3")
    team = Recording("team")
    team.script = [RetryLater("Telegram unreachable")] * 40
    sender = Dispatcher(
        store, {"team": team}, DispatchSettings(retry_max_s=300), clock=clock, monotonic=clock
    )
    await store.add_events([event()], [[("team", "r1")]], queued_at=clock.now)
    with structlog.testing.capture_logs() as logged:
        for _ in range(15):
            await sender.flush("team")
            clock.advance(300)
        assert [name for name, _ in sender.stuck(3600)] == ["team"]
        team.script = []
        clock.advance(400)  # past the longest back-off (300 s and its jitter)
        await sender.flush("team")
    assert sender.stuck(3600) == [] and await store.outbox_counts() == {"sent": 1}
    said = [(e["log_level"], e["event"]) for e in logged if e["log_level"] != "debug"]
    assert said == [
        ("warning", "channel cannot deliver now; retrying"),
        ("info", "channel delivers again"),
    ]


async def test_on_demand_reads_are_capped_at_the_reserve(harness: Harness) -> None:
    """`poll` and the bot's /watch could spend the whole day's quota (200 of
    200 went on ids that do not exist), not only the reserve (5 %) the README
    promises. Now they stop at the reserve, and the planner keeps the rest."""
    harness.control.configure(daily_quota=200)
    service = await harness.service([], daily_quota=200, requests_per_second=20)
    spent = 0
    with service.ledger.on_demand():
        for missing in range(900_000, 900_050):
            try:
                await service.client.get_task(missing)
            except PlanfixError as exc:
                if isinstance(exc, QuotaExhaustedError):
                    break
            spent += 1
    assert spent == 10  # 5 % of 200
    assert service.ledger.remaining == 190
    assert "reserve" in (service.ledger.blocked_on_demand() or "")


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("Threads:")[1].split()[0])


def _closed_by_peer(sock: socket.socket) -> bool:
    """The server hung up on ``sock`` (whatever it said before)."""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def test_idle_and_vanishing_http_clients_hold_nothing_and_log_only_json(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """400 idle half-open connections to /metrics held 404 threads for more than
    60 s, and clients that hung up mid-answer wrote raw tracebacks into the JSON
    log. Now the server runs on the event loop: no thread per connection, a
    scrape gets through the crowd, idle clients are cut off, and every line of
    the log is JSON."""
    task = control.create_task(title="Метрики", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task])
    host, port = data["metrics"]["listen"].split(":")
    address = (host, int(port))
    with running(data, tmp_path) as (_, log, service):
        threads_before = _threads(service.pid)
        idle = []
        for _ in range(400):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end
            idle.append(sock)
        started = time.monotonic()
        assert get(f"http://{data['metrics']['listen']}/healthz")[0] == 200
        assert time.monotonic() - started < 5
        assert _threads(service.pid) <= threads_before + 2
        for _ in range(200):  # ask, then vanish with a reset before the answer is read
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            sock.close()
        wait_for(lambda: all(_closed_by_peer(sock) for sock in idle), within=5)  # crowded out
        late = [socket.create_connection(address, timeout=5) for _ in range(5)]
        for sock in late:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        wait_for(lambda: all(_closed_by_peer(sock) for sock in late), within=40)  # timed out
        for sock in idle + late:
            sock.close()
        assert get(f"http://{data['metrics']['listen']}/metrics")[0] == 200
    lines = log.read_text().splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines), [
        line for line in lines if not line.startswith("{")
    ][:5]


def _attempts(metrics: str, channel: str) -> float:
    """Delivery attempts on ``channel`` so far, from /metrics."""
    body = get(f"http://{metrics}/metrics")[1]
    prefix = f'planfix_notifier_deliveries_total{{channel="{channel}",'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix)
    )


def _plain(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    return "" if body is None else str(body.get_content())


CONFIG_FAULTS = {  # fault: (the key the operator must fix, the channel that still works)
    "wrong account": ("planfix.account", "team"),
    "SMTP without AUTH": ("channels.mail", "team"),
    "Telegram 401": ("channels.team.bot_token", "mail"),
}


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_a_configuration_error_met_at_run_time_is_named_and_not_retried_blindly(
    fault: str,
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    """A wrong account (0004), an SMTP server without AUTH while a username is
    set, and a bot token Telegram refuses were retried forever in silence
    ("mail server unreachable: SMTPException"), /healthz 200. They are
    configuration errors: one log line naming the key, /healthz 503 with the
    cause, the operator told through the channel that works, and the broken
    one tried again rarely, its deliveries kept, not dead-lettered."""
    key, works = CONFIG_FAULTS[fault]
    task = control.create_task(title="Настройка", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task])
    data["channels"]["mail"] = smtp_plain.options(group=False)
    if fault == "wrong account":
        data["planfix"]["account"] = "nosuch"
    elif fault == "SMTP without AUTH":
        data["channels"]["mail"].update(username="robot", password="mail-secret-1")
    else:
        data["channels"]["team"]["bot_token"] = "654321:WRONG-token-abcdefghijklmnopqrstuvw"
    broken = "mail" if fault == "SMTP without AUTH" else "team"
    metrics = data["metrics"]["listen"]
    with running(data, tmp_path, tasks=0 if fault == "wrong account" else 1) as (_, log, _p):
        if fault != "wrong account":
            control.change_task(task, status=2)
        wait_for(lambda: get(f"http://{metrics}/healthz")[0] == 503, within=30)
        reason = get(f"http://{metrics}/healthz")[1]
        assert "configuration error" in reason and key in reason, reason
        if works == "team":
            wait_for(lambda: any(key in m.text for m in telegram.fake.sent), within=30)
        else:
            wait_for(
                lambda: any(key in _plain(m) for m in smtp_plain.inbox.messages),
                within=30,
            )
        tried = _attempts(metrics, broken) if fault != "wrong account" else 0
        requests = sum(control.state()["requests"].values())
        time.sleep(8)  # the service goes on; the broken part is not hammered meanwhile
        assert get(f"http://{metrics}/healthz")[0] == 503
        if fault == "wrong account":
            assert sum(control.state()["requests"].values()) == requests
        else:
            assert _attempts(metrics, broken) == tried
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    named = [line for line in lines if key in str(line) and line["level"] in ("error", "warning")]
    assert len(named) == 1, named
    if fault != "wrong account":
        with contextlib.closing(sqlite3.connect(tmp_path / "state.sqlite3")) as db:
            states = dict(
                db.execute(
                    "SELECT state, count(*) FROM outbox WHERE channel = ? GROUP BY state", (broken,)
                ).fetchall()
            )
        assert states.get("dead", 0) == 0 and states.get("pending", 0) >= 1, states
