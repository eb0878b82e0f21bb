"""The command line, run as a user runs it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

from notifier.emulator import Emulator, EmulatorControl
from notifier.store import StateLock, Store
from notifier.watch.quota import QuotaLedger


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def test_demo_shows_alerts_as_the_account_changes() -> None:
    """With the status page's usual port taken (another demo, a service), it
    takes any free one and says which."""
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # (taken already, by something else: as good)
            taken.bind(("127.0.0.1", 9464))
            taken.listen()
        done = run("demo", "--seconds", "18", "--pace", "0.25")  # a deletion: confirmed ~10 s later
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "PlanFix emulator on http://127.0.0.1:" in lines[0]
    page = next(line for line in lines if line.startswith("Status page: http://127.0.0.1:"))
    assert "127.0.0.1:9464/" not in page and "admin token for its actions" in page
    shown = "\n".join(lines[1:])
    for expected in (
        "#1 «Подготовить отчёт по продажам за ноябрь»: Статус: Новая → В работе https://demo.planfix.ru/task/1",
        "#2 «Согласовать договор поставки с ООО «Ромашка»»: Исполнители: ",
        "#3 «Обновить прайс-лист на сайте»: Задача недоступна: удалена",
        "#4 «Провести ревизию склада»: Статус: В работе → Завершённая",
        "#5 «Проверить и подписать акт сверки»: Название: ",
        "#5 «Проверить и подписать акт сверки»: Важность: обычная → высокая",
    ):
        assert expected in shown
    assert "Traceback" not in done.stderr


def test_poll_with_a_config(tmp_path: Path, emulator: Emulator, control: EmulatorControl) -> None:
    task_id = control.create_task(title="Проверка опроса", status=2)["id"]
    config = tmp_path / "notifier.toml"
    settings = emulator.account.settings
    config.write_text(
        f'[planfix]\naccount = "{settings.account}"\nendpoint = "{emulator.endpoint}"\n'
        f'api_key = "{settings.api_key}"\ntoken = "{settings.token}"\n'
    )
    done = run("poll", str(task_id), "999999", "--config", str(config))
    assert done.returncode == 1, done.stderr  # one of the two tasks does not exist
    assert "Проверка опроса" in done.stdout and "В работе" in done.stdout
    assert "999999 ! PlanFix error 3001" in done.stdout
    assert settings.token not in done.stdout + done.stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[planfix]\naccount = "a"\napi_key = "k"\ntoken = "t"\nquota = 1\n')
    done = run("poll", "1", "--config", str(config))
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"planfix-notifier: {config}: planfix.quota: unknown key (a typo?)"
    )


def test_no_config_found_says_where_it_looked(tmp_path: Path) -> None:
    done = run("poll", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert "no configuration" in done.stderr and "Traceback" not in done.stderr


def test_help_for_every_command() -> None:
    for command in ("run", "poll", "demo", "emulator"):
        done = run(command, "--help")
        assert done.returncode == 0 and "usage:" in done.stdout


async def test_quota_shows_a_block_and_reset_forgets_it(tmp_path: Path) -> None:
    config = tmp_path / "notifier.toml"
    state = tmp_path / "state.sqlite3"
    config.write_text(
        f'[planfix]\naccount = "acme"\napi_key = "k"\ntoken = "t"\n[state]\npath = "{state}"\n'
    )
    store = Store(state)
    ledger = QuotaLedger(store, daily_quota=5000, timezone="Europe/Moscow")
    row = ledger.today()
    row.used, row.exhausted = 12, True  # a 0007 from before the plan was raised
    await store.save_quota(row)
    await store.close()
    shown = run("quota", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    assert "12 of 5000 used" in shown.stdout and "blocked: PlanFix answered 0007" in shown.stdout
    reset = run("quota", "--reset", "--config", str(config))
    assert reset.returncode == 0, reset.stderr
    assert "not blocked" in reset.stdout and "12 of 5000 used" in reset.stdout
    with StateLock(state):  # as a running service holds it
        refused = run("quota", "--reset", "--config", str(config))
    assert refused.returncode == 2 and "SIGHUP" in refused.stderr
