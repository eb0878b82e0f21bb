"""The wall clock stepping under a running service (issue "Never silent",
item 4). This test reads the real clock on purpose: it moves it, with
time-machine, relative to now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import time_machine

from notifier.alerts.events import Event, EventKind
from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from tests.alerts.samples import MSK

GUARD_S = 60  # a case that hangs fails here instead of blocking the suite


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def _alerted(seen: list[Event], changes: int) -> bool:
    return sum(e.kind is EventKind.STATUS_CHANGED for e in seen) == changes


async def test_a_wall_clock_step_neither_freezes_polling_nor_turns_health_red(
    emulator: Emulator, control: EmulatorControl, tmp_path: Path
) -> None:
    """The wall clock stepped back 10 minutes (NTP fixing a clock that ran
    fast): polling froze for as long as the step, since the pacing, the
    scheduler and the plan all waited on wall time. Now waits run on the
    monotonic clock and a step re-bases the schedule: a change right after a
    step back, and after a step forward across midnight, is alerted within
    seconds, /healthz stays 200, and the new day gets a fresh quota."""
    control.configure(daily_quota=100_000)
    task = control.create_task(title="Часы", status=1)["id"]
    settings = emulator.account.settings
    config = config_from_dict(
        {
            "planfix": {
                "account": settings.account,
                "endpoint": emulator.endpoint,
                "api_key": settings.api_key,
                "token": settings.token,
                "daily_quota": 100_000,
            },
            "state": {"path": str(tmp_path / "state.sqlite3")},
            "watch": {"tasks": [task], "min_interval_s": 5},
            "metrics": {"listen": ""},
        },
        source="test",
        environ={},
    )
    service = Service(config)
    seen: list[Event] = []
    service.poller.on_events = lambda stored: seen.extend(event for _, event in stored)
    await service.start()
    try:
        await _until(lambda: service.poller.records[task].card is not None, within=GUARD_S)
        changes = 0
        for step in ("back", "over midnight"):
            now = time.time()
            if step == "back":
                to = now - 600
            else:
                tomorrow = datetime.fromtimestamp(now, MSK).date() + timedelta(days=1)
                to = datetime.combine(tomorrow, datetime.min.time(), MSK).timestamp() + 30
            with time_machine.travel(to, tick=True):
                await asyncio.sleep(3)  # the step is noticed
                changes += 1
                control.change_task(task, status=1 + changes)
                await _until(partial(_alerted, seen, changes), within=30)
                healthy, why = service.health()
                assert healthy, why
                if step == "over midnight":
                    assert service.ledger.today().day == tomorrow
                    assert service.ledger.today().used <= 5  # a fresh day, and no burst
    finally:
        await service.stop()
