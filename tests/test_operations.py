"""The service as an admin runs it: a real process, signals, metrics, health,
the commands around it — and no secret in anything it prints."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.smtp import SmtpServer, free_port
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import CHAT, _toml, settings

SMTP_PASSWORD = "smtp-Pa55word-XYZ"

ROOT = Path(__file__).resolve().parents[1]


def service_config(
    emulator: Emulator, telegram: TelegramServer, tmp_path: Path, tasks: list[int], **extra: Any
) -> dict[str, Any]:
    """test_delivery's settings, with metrics on a free port and a drain on stop."""
    data = settings(emulator, telegram, tmp_path / "state.sqlite3", tasks)
    data["alerts"]["shutdown_drain_s"] = 5
    data["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    data.update(extra)
    return data


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


def wait_for(condition: Callable[[], bool], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening yet


@pytest.fixture
def big_quota(emulator: Emulator, control: EmulatorControl) -> None:
    control.configure(daily_quota=100_000)
    emulator.account.settings.daily_quota = 100_000


def test_a_session_of_the_service_leaks_no_secret(
    big_quota: None,
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    tasks = [control.create_task(title=f"Задача {n}", status=1)["id"] for n in range(3)]
    data = service_config(emulator, telegram, tmp_path, tasks)
    data["channels"]["mail"] = smtp_plain.options(
        username="robot", password=SMTP_PASSWORD, security="none"
    )
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    metrics = f"http://{data['metrics']['listen']}"
    secrets = [
        emulator.account.settings.api_key,
        emulator.account.settings.token,
        telegram.fake.token,
        SMTP_PASSWORD,
    ]

    process = subprocess.Popen(
        [sys.executable, "-m", "notifier", "--log-level", "DEBUG", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(
            lambda: (
                get(f"{metrics}/healthz")[0] == 200
                and 'planfix_notifier_polls_total{result="ok"}' in get(f"{metrics}/metrics")[1]
            )
        )
        control.change_task(tasks[0], status=2)
        wait_for(lambda: bool(telegram.fake.sent))
        # errors of every kind, each of which must keep its secrets to itself
        control.inject("html", times=1)
        control.inject("xxe", times=1)
        telegram.fake.inject("server_error", times=2)
        control.change_task(tasks[1], status=2)
        wait_for(lambda: len(telegram.fake.sent) >= 2, within=60)  # after the back-off
        # a good reload: one more task; a bad one: refused, the old kept
        data["watch"]["tasks"] = [*tasks, control.create_task(title="Добавлена", status=1)["id"]]
        config.write_text(_toml(data))
        process.send_signal(signal.SIGHUP)
        wait_for(lambda: "planfix_notifier_watched_tasks 4.0" in get(f"{metrics}/metrics")[1])
        config.write_text(_toml(data) + "\n[planfix]\nbroken = true\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(1)
        control.change_task(tasks[2], status=2)
        wait_for(lambda: len(telegram.fake.sent) >= 3)  # still running on the old config
        status, body = get(f"{metrics}/metrics")
        assert status == 200
        for name in (
            "planfix_notifier_planfix_requests_total",
            "planfix_notifier_events_total",
            "planfix_notifier_deliveries_total",
            "planfix_notifier_quota_used",
            "planfix_notifier_last_successful_poll_timestamp_seconds",
            "planfix_notifier_poll_duration_seconds_bucket",
            "planfix_notifier_outbox_pending",
        ):
            assert name in body, name  # fmt: skip
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err[:500]  # JSON lines: stderr is not a terminal
    assert any(
        line["event"] == "new configuration refused; the running one is kept" for line in lines
    )
    assert any(line["event"] == "stopped" for line in lines)
    everything = out + err + "".join(m.text for m in telegram.fake.sent)
    for secret in secrets:
        assert secret not in everything, "a secret leaked into the output"


def test_health_says_why_when_planfix_refuses_us(
    big_quota: None,
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    tmp_path: Path,
) -> None:
    task = control.create_task(title="Проверка", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task])
    data["planfix"]["api_key"] = "wrong-key-123"
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    metrics = f"http://{data['metrics']['listen']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "notifier", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: get(f"{metrics}/healthz")[0] == 503)
        assert "PlanFix refuses us" in get(f"{metrics}/healthz")[1]
        wait_for(lambda: any("PlanFix не отвечает" in m.text for m in telegram.fake.sent))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def check_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """`check`'s table: name → (ok | FAIL, detail); columns are 2+ spaces apart."""
    rows = {}
    for line in stdout.splitlines():
        name, status, detail = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[name] = (status, detail)
    return rows


def test_check_prints_a_table_and_fails_on_any_failure(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    data = service_config(emulator, telegram, tmp_path, [])
    data["channels"]["mail"] = smtp_plain.options()
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = check_rows(done.stdout)
    assert set(rows) == {
        "config",
        "state file",
        "PlanFix log-in",
        "watch",
        "PlanFix quota",
        "channel team",
        "channel mail",
        "metrics.listen",
    }
    assert done.returncode == 0  # a warning is not a failure
    assert all(status == "ok" for name, (status, _) in rows.items() if name != "watch"), rows
    assert rows["watch"] == (
        "WARN",
        "nothing to watch; add watch.numbers, tasks, projects or filters",
    )
    assert re.fullmatch(r"\d+ of 5000 left today by our count", rows["PlanFix quota"][1])
    assert rows["channel team"][1].endswith("1 chats found")
    assert rows["metrics.listen"][1].endswith("can be listened on")
    telegram.fake.token = "1:other"  # the bot token no longer works
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 1
    assert check_rows(done.stdout)["channel team"][0] == "FAIL"


def test_check_names_the_cause_and_the_place_of_each_failure(
    emulator: Emulator,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    """Tried as a new user: a bare "SMTPConnectError", "quota ok" with PlanFix
    unreachable, a chat the bot is not in found only at the first alert."""
    data = service_config(emulator, telegram, tmp_path, [])
    data["planfix"]["endpoint"] = f"http://127.0.0.1:{free_port()}/xml/"  # nothing listens
    mail = smtp_plain.options() | {"port": free_port()}  # nor here
    data["channels"]["mail"] = mail
    telegram.fake.unknown_chats.add(str(CHAT))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # bound, not listening: no one answers, no one may listen
    data["metrics"]["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    try:
        done = run_cli("check", "--config", str(config))
    finally:
        taken.close()
    rows = check_rows(done.stdout)
    assert done.returncode == 1
    assert rows["PlanFix quota"][0] == "WARN"
    assert rows["PlanFix quota"][1].startswith("unknown: PlanFix could not be reached")
    status, detail = rows["PlanFix log-in"]
    assert status == "FAIL" and "(127.0.0.1) unreachable" in detail and "refused" in detail
    status, detail = rows["channel mail"]
    assert status == "FAIL" and f"127.0.0.1:{mail['port']}" in detail
    assert re.search(r"SMTPConnectError: .*(refused|connect)", detail, re.IGNORECASE), detail
    status, detail = rows["channel team"]
    assert status == "FAIL" and f"chat {CHAT}: Chat not found" in detail, detail
    status, detail = rows["metrics.listen"]
    assert status == "FAIL" and "cannot listen there" in detail


def test_check_says_which_ids_do_not_exist_and_points_to_numbers(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    """Tried as a new user: the numbers from the task links went into
    ``tasks``, and check said all was fine."""
    task = control.create_task(title="Номер не id", status=1)
    data = service_config(emulator, telegram, tmp_path, [task["id"], task["general"]])
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 1
    status, detail = check_rows(done.stdout)["watch"]
    assert status == "FAIL" and f"no task with id {task['general']}." in detail
    assert "watch.numbers" in detail
    data["watch"]["tasks"] = [task["id"]]
    data["watch"]["numbers"] = [task["general"]]
    config.write_text(_toml(data))
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 0, done.stdout
    assert check_rows(done.stdout)["watch"] == ("ok", "1 tasks by id, 1 by number")


def test_status_and_test_alert(
    big_quota: None,
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    tmp_path: Path,
) -> None:
    task = control.create_task(title="Статус задачи", status=1)["id"]
    data = service_config(emulator, telegram, tmp_path, [task])
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    assert run_cli("poll", str(task), "--send", "--config", str(config)).returncode == 0
    done = run_cli("status", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert (
        "watched tasks: 1" in done.stdout
        and "Статус задачи" in done.stdout
        and " ok " in done.stdout
    )
    assert "of 100000 used" in done.stdout
    assert "outbox: empty" in done.stdout
    assert "health: unknown — no service answers at http://127.0.0.1:" in done.stdout
    assert "change feed: task.getList, every 60 s; last look not yet" in done.stdout
    done = run_cli("test-alert", "--config", str(config))
    assert done.returncode == 0 and f"team → {CHAT}: delivered" in done.stdout
    assert "Проверка уведомлений planfix-notifier" in telegram.fake.sent[-1].text
    assert "/task/" not in telegram.fake.sent[-1].text  # a sample links to no task
    telegram.fake.inject("forbidden", CHAT)
    done = run_cli("test-alert", "--channel", "team", "--config", str(config))
    assert done.returncode == 1
    assert done.stdout == (
        f"team → {CHAT}: not delivered, and retrying would not help: the bot cannot write to "
        f"chat {CHAT}: Forbidden: bot was blocked by the user\n"
    )
    assert run_cli("test-alert", "--channel", "nope", "--config", str(config)).returncode == 2


def test_secrets_from_files_and_the_environment(
    emulator: Emulator, telegram: TelegramServer, tmp_path: Path
) -> None:
    data = service_config(emulator, telegram, tmp_path, [])
    token = data["planfix"].pop("token")
    bot = data["channels"]["team"].pop("bot_token")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "bot").write_text(bot + "\n")
    data["channels"]["team"]["bot_token_file"] = "bot"
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    env = {
        **os.environ,
        "CREDENTIALS_DIRECTORY": str(creds),
        "PLANFIX_NOTIFIER_PLANFIX_TOKEN": token,
    }
    done = run_cli("check", "--config", str(config), env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_poll_takes_a_number_and_check_leaves_the_watch_set_alone(
    big_quota: None,
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    tmp_path: Path,
) -> None:
    """Tried as a new user: `poll #5` was refused by argparse, and `check` of a
    config being tried out rewrote the watch set `status` then showed."""
    task = control.create_task(title="По номеру", status=1)
    data = service_config(emulator, telegram, tmp_path, [])
    data["watch"]["numbers"] = [task["general"]]
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    done = run_cli("poll", f"#{task['general']}", "--config", str(config))
    assert done.returncode == 0 and "По номеру" in done.stdout and done.stderr == ""
    link = f"https://demo.planfix.ru/task/{task['general']}"
    assert "По номеру" in run_cli("poll", link, "--config", str(config)).stdout
    missing = run_cli("poll", "#999999", "--config", str(config))
    assert missing.returncode == 1 and "not a task id, nor a number PlanFix knows" in missing.stdout
    assert run_cli("check", "--config", str(config)).returncode == 0
    status = run_cli("status", "--config", str(config))
    assert "watched tasks: 0" in status.stdout  # check changed nothing; run would watch it


def test_a_busy_emulator_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_cli("emulator", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith("Address already in use")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [["--log-level", "verbose", "status"], ["status", "--log-level", "verbose"], ["poll"], []],
)
def test_bad_usage_is_one_line(args: list[str]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("(--help for usage)\n")


def test_init_writes_the_sample_the_package_ships(tmp_path: Path) -> None:
    done = run_cli("init", str(tmp_path / "n.toml"))
    assert done.returncode == 0 and "planfix-notifier check --config" in done.stdout
    written = (tmp_path / "n.toml").read_text(encoding="utf-8")
    assert written == (ROOT / "config" / "notifier.example.toml").read_text(encoding="utf-8")
    assert oct((tmp_path / "n.toml").stat().st_mode & 0o777) == "0o600"
    again = run_cli("init", str(tmp_path / "n.toml"))
    assert again.returncode == 2 and "exists; nothing written" in again.stderr
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "data/*.toml" in pyproject["tool"]["setuptools"]["package-data"]["notifier"]
