"""Three instances, six accounts, one PostgreSQL: each account is polled by
exactly one instance, the accounts spread over the instances; kill -9 of the
one holding the most is taken over within the lease, nothing is lost or told
twice, each account's quota is counted once for every request its PlanFix
saw; the instance restarted gets its share back."""

from __future__ import annotations

import signal
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from notifier.app import Service
from notifier.config import config_from_dict
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


class Clocks:
    """The wall clock the leases are stored by and the steady one their ages
    are kept by, moved by the test: a lease's expiry without waiting for it."""

    def __init__(self) -> None:
        self.wall, self.steady = 1_900_000_000.0, 0.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.steady += seconds


def lease_job_service(schema: str, names: list[str], holder: str, clocks: Clocks) -> Service:
    """An instance knowing these accounts (their PlanFix never asked here: one
    task each, not yet read), on the shared schema, whose lease job the test
    runs tick by tick."""
    base = {
        "api_key": "lease-job-key",
        "token": "lease-job-token",
        "endpoint": "http://127.0.0.1:9/xml/",
        "watch": {"tasks": [5]},
    }
    data = {
        "accounts": {name: {**base, "account": name} for name in names},
        "state": {"url": URL, "schema": schema, "lease_s": LEASE_S},
        "metrics": {"listen": ""},
    }
    return Service(
        config_from_dict(data, source="test", environ={}),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.steady,
        holder=holder,
    )


def gauges(service: Service) -> tuple[float | None, ...]:
    """(tasks watched, awaiting their first read, quota left)."""
    sample = service.metrics.registry.get_sample_value
    return tuple(
        sample(f"planfix_notifier_{name}")
        for name in ("watched_tasks", "tasks_awaiting_baseline", "quota_remaining")
    )


def last_round(service: Service) -> float | None:
    return service.metrics.registry.get_sample_value(
        "planfix_notifier_last_poll_round_timestamp_seconds"
    )


def polled(service: Service) -> list[str]:
    return [name for name, watch in service.watches.items() if watch.may_poll()]


@pytest.fixture
async def lease_jobs() -> AsyncIterator[tuple[str, list[Service]]]:
    if (why := postgres.reachable()) is not None:
        pytest.fail(why)
    made: list[Service] = []
    with postgres.fresh_schema() as schema:
        yield schema, made
        for service in made:
            await service.stop()


async def test_the_lease_job_shares_the_accounts_hands_over_and_takes_the_dead_ones(
    lease_jobs: tuple[str, list[Service]],
) -> None:
    schema, made = lease_jobs
    clocks = Clocks()
    names = ["w", "x", "y", "z"]
    a, b = (lease_job_service(schema, names, h, clocks) for h in ("a", "b"))
    made += [a, b]
    await a._keep_leases()
    assert polled(a) == names  # alone: every account
    await b._keep_leases()
    assert polled(b) == []  # none free: it waits for a's hand-over
    for service in (a, b):  # the gauges: of what this instance polls (b: no alert to raise)
        await service.load()
        await service.refresh_gauges()
    assert [gauges(a), gauges(b)] == [(4, 4, 4 * 5000), (0, 0, 0)]
    await b._poll_job(b.main)  # (and its poll loop turns, though it has nothing to poll)
    assert last_round(b) == clocks.wall
    a.watches["y"].round_done_at = clocks.steady - 100  # one account's loop stuck: it shows
    a._note_round()
    assert last_round(a) == clocks.wall - 100
    await a._keep_leases()
    assert len(polled(a)) == 2  # two instances: a keeps its share, gives back the rest
    await b._keep_leases()
    assert sorted(polled(a) + polled(b)) == names and len(polled(b)) == 2
    for _ in range(3):  # steady: renewed, nothing moves
        clocks.tick(LEASE_S / 6)
        for service in (a, b):
            await service._keep_leases()
    assert sorted(polled(a) + polled(b)) == names and len(polled(b)) == 2

    for _ in range(7):  # b dies (kill -9: nothing given back); a goes on
        clocks.tick(LEASE_S / 6)
        await a._keep_leases()
    assert polled(a) == names  # b's presence and its leases expired: a polls all
    stale = last_round(b)
    await b._poll_job(b.main)  # (were b still running, but its store out of reach)
    assert last_round(b) == stale  # its presence lapsed: its loop no longer counts as turning


async def test_an_account_only_one_instance_knows_is_taken_beyond_its_share(
    lease_jobs: tuple[str, list[Service]],
) -> None:
    """A rolling config change: a's config has account o, b's not yet. a's
    share (one of two accounts over two instances) is full with w; after a
    whole lease with no one polling o, a takes it anyway, and keeps it."""
    schema, made = lease_jobs
    clocks = Clocks()
    holder = next(h for h in (f"a{n}" for n in range(100)) if _prefers(h, "w", "o"))
    a = lease_job_service(schema, ["w", "o"], holder, clocks)
    b = lease_job_service(schema, ["w"], "b", clocks)
    made += [a, b]
    await b.leases.take(b.presence)  # b is up, and has not yet taken w
    await a._keep_leases()
    await b._keep_leases()
    assert polled(a) == ["w"] and polled(b) == []  # a's share is full; o is free
    steps = 0
    while "o" not in polled(a):
        clocks.tick(LEASE_S / 6)
        steps += 1
        for service in (a, b):
            await service._keep_leases()
        assert steps <= 7, "o was left unpolled"
    assert steps >= 6  # (not before a whole lease: another instance might have come for it)
    for _ in range(12):  # adopted: kept, and w too (b has room but no free account)
        clocks.tick(LEASE_S / 6)
        for service in (a, b):
            await service._keep_leases()
    assert polled(a) == ["w", "o"] and polled(b) == []


def _prefers(holder: str, first: str, then: str) -> bool:
    """Whether an instance named so tries ``first`` before ``then`` (its CRC order)."""
    return zlib.crc32(f"{holder}|{first}".encode()) < zlib.crc32(f"{holder}|{then}".encode())
