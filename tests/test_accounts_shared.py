"""Three instances, six accounts, one PostgreSQL: each account is polled by
exactly one instance, the accounts spread over the instances; kill -9 of the
one holding the most is taken over within the lease, nothing is lost or told
twice, each account's quota is counted once for every request its PlanFix
saw; the instance restarted gets its share back."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from notifier.emulator import Account, Emulator, EmulatorControl, Settings
from tests import postgres
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import _toml, midday_zone, settings
from tests.test_operations import wait_for
from tests.test_postgres_state import URL, _says, run, stop, told

ACCOUNTS = 6
LEASE_S = 6.0


@pytest.fixture
def accounts() -> Iterator[list[tuple[Emulator, EmulatorControl]]]:
    zone = midday_zone()  # (the quota day never ends under the test)
    with ExitStack() as stack:
        made = []
        for n in range(ACCOUNTS):
            settings = Settings(account=f"acc{n}", timezone=zone)
            emulator = stack.enter_context(Emulator(Account(settings)))
            control = EmulatorControl(emulator.base_url)
            stack.callback(control.close)
            made.append((emulator, control))
        yield made


def config_of(
    accounts: list[tuple[Emulator, EmulatorControl]],
    tasks: list[int],
    telegram: TelegramServer,
    schema: str,
) -> dict[str, Any]:
    """[accounts.accN] alone (no [planfix]), each its emulator and its task."""
    data = settings(accounts[0][0], telegram, Path("unused"), [])
    del data["planfix"], data["watch"]
    data["state"] = {"url": URL, "schema": schema, "lease_s": LEASE_S}
    data["accounts"] = {}
    for (emulator, _), task in zip(accounts, tasks, strict=True):
        emu = emulator.account.settings
        data["accounts"][emu.account] = {
            "account": emu.account,
            "endpoint": emulator.endpoint,
            "api_key": emu.api_key,
            "token": emu.token,
            "timezone": emu.timezone,
            "daily_quota": 5000,
            "requests_per_second": 20,
            "watch": {"tasks": [task], "min_interval_s": 1},
        }
    return data


def holders(schema: str) -> dict[str, int]:
    """Each account polled now → the PID of the instance polling it."""
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT name, holder FROM {} WHERE name LIKE 'poll:%%' AND expires > %s")
        rows = conn.execute(query.format(sql.Identifier(schema, "leases")), (time.time(),))
        return {name[5:]: int(holder.split(" pid ")[1].split()[0]) for name, holder in rows}


def spread(schema: str, pids: list[int]) -> bool:
    """Every account polled, two by each instance."""
    held = holders(schema)
    return len(held) == ACCOUNTS and Counter(held.values()) == dict.fromkeys(pids, 2)


def counted(schema: str) -> dict[str, int]:
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT account, SUM(used) FROM {} GROUP BY account")
        rows = conn.execute(query.format(sql.Identifier(schema, "quota")))
        return {str(account): int(used) for account, used in rows}


def baselines(schema: str) -> int:
    with psycopg.connect(postgres.URL) as conn:
        query = sql.SQL("SELECT COUNT(*) FROM {} WHERE snapshot != ''")
        row = conn.execute(query.format(sql.Identifier(schema, "task_state"))).fetchone()
    return int(row[0]) if row else 0


def test_three_instances_share_six_accounts_and_take_over_one_killed(
    accounts: list[tuple[Emulator, EmulatorControl]],
    telegram: TelegramServer,
    tmp_path: Path,
) -> None:
    if (why := postgres.reachable()) is not None:
        pytest.fail(why)
    tasks = [control.create_task(title=f"Задача acc{n}", status=1)["id"]
             for n, (_, control) in enumerate(accounts)]  # fmt: skip
    with postgres.fresh_schema() as schema:
        config = tmp_path / "notifier.toml"
        config.write_text(_toml(config_of(accounts, tasks, telegram, schema)))
        logs = [tmp_path / f"{n}.log" for n in range(4)]
        instances = [run(config, log) for log in logs[:3]]
        try:
            for log in logs[:3]:
                wait_for(partial(_says, log, "started"), within=60)
            pids = [p.pid for p in instances]
            wait_for(partial(spread, schema, pids), within=60)
            wait_for(lambda: baselines(schema) == ACCOUNTS, within=30)
            for _, control in accounts:
                control.change_task(tasks[0], status=2)  # (every account's first task: 1001)
            wait_for(lambda: told(telegram, "Новая → В работе") == ACCOUNTS, within=60)

            most = Counter(holders(schema).values()).most_common(1)[0][0]
            (killed,) = [p for p in instances if p.pid == most]
            killed.send_signal(signal.SIGKILL)
            killed.wait()
            at = time.monotonic()
            survivors = [p.pid for p in instances if p is not killed]
            wait_for(lambda: set(holders(schema).values()) == set(survivors)
                     and len(holders(schema)) == ACCOUNTS, within=60)  # fmt: skip
            took_over_s = time.monotonic() - at
            assert took_over_s <= LEASE_S * 7 / 6 + 5, took_over_s
            for _, control in accounts:
                control.change_task(tasks[0], status=3)
            wait_for(lambda: told(telegram, "В работе → Завершённая") == ACCOUNTS, within=60)

            instances.append(run(config, logs[3]))  # it comes back, and gets its share
            wait_for(partial(_says, logs[3], "started"), within=60)
            back = [p.pid for p in instances if p is not killed]
            wait_for(partial(spread, schema, back), within=60)
            time.sleep(2)
            for n in range(ACCOUNTS):  # each change told once, by the account it is of
                assert told(telegram, f"[acc{n}] <b>Статус: Новая → В работе") == 1
                assert told(telegram, f"[acc{n}] <b>Статус: В работе → Завершённая") == 1
            # Counted before it is sent: the one killed may have counted one it never sent.
            by_account = counted(schema)
            seen = {e.account.settings.account: e.account.quota_used for e, _ in accounts}
            for name, used in seen.items():
                assert 0 < used <= by_account[name] <= used + 1, (name, by_account, seen)
        finally:
            stop(*instances)
        for process, log in zip(instances, logs, strict=True):
            assert process.returncode in (0, -signal.SIGKILL), log.read_text()[-2000:]
