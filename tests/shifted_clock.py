"""Run the tests that touch time with the wall clock of every process moved
(time-machine, started by ``shifted_clock_site/sitecustomize.py``), so that no
test can depend on the date or the hour it runs at.

    python -m tests.shifted_clock [pytest args…]

Three runs side by side, each a fresh pytest whose Python subprocesses (the
service, the emulator) inherit the shifted clock:

- ``+400 days``: a date long after the one the tests were written on;
- ``moscow midnight``: 90 s before the next midnight in Europe/Moscow, a year
  on, so that the run crosses the quota day's end;
- ``new york dst``: under ``TZ=America/New_York``, 90 s before its next
  daylight-saving change, so that local wall time jumps during the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

# The tests that read a clock: alerts and their outbox, the poller and its
# quota day, the store, the emulator's clock, the bot, delivery end to end, the
# channel faults (retries, ages), the demo and the operations commands. The planner's and the differ's tests are
# left out: they are pure functions of a clock they are given.
TIME_TESTS = (
    "tests/alerts",
    "tests/watch",
    "--ignore=tests/watch/test_planner.py",
    "--ignore=tests/watch/test_diff.py",
    "tests/store",
    "tests/emulator",
    "tests/bot",
    "tests/test_delivery.py",
    "tests/reliability/test_channel_faults.py",
    "tests/test_cli.py",  # the demo: deadlines and flips on the emulator's clock
    "tests/test_operations.py",  # status and health: the quota day, ages
)
LEAD_S = 90
RUN_LIMIT_S = 900.0  # all three together; they take about three minutes
ROOT = Path(__file__).resolve().parent.parent
SITE = (
    ROOT / "tests" / "shifted_clock_site"
)  # how long before the moment of interest each run starts


def next_midnight(zone: ZoneInfo, after: datetime) -> datetime:
    local = after.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), zone)


def next_offset_change(zone: ZoneInfo, after: datetime) -> datetime:
    """The next instant the zone's UTC offset changes (a DST switch), to the minute."""
    step = timedelta(hours=1)
    t = after.astimezone(UTC)
    offset = t.astimezone(zone).utcoffset()
    for _ in range(24 * 400):
        if (t + step).astimezone(zone).utcoffset() != offset:
            lo, hi = t, t + step
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                lo, hi = (mid, hi) if mid.astimezone(zone).utcoffset() == offset else (lo, mid)
            return hi
        t += step
    raise ValueError(f"{zone.key} has no offset change within 400 days")


def shift_400_days(now: datetime) -> int:
    return 400 * 86400


def shift_to_moscow_midnight(now: datetime) -> int:
    midnight = next_midnight(ZoneInfo("Europe/Moscow"), now + timedelta(days=365))
    return int((midnight - now).total_seconds()) - LEAD_S


def shift_to_new_york_dst(now: datetime) -> int:
    change = next_offset_change(ZoneInfo("America/New_York"), now)
    return int((change - now).total_seconds()) - LEAD_S


# (name, how far to move the clock from now, extra environment)
RUNS: tuple[tuple[str, Callable[[datetime], int], dict[str, str]], ...] = (
    ("+400 days", shift_400_days, {}),
    ("moscow midnight", shift_to_moscow_midnight, {}),
    ("new york dst", shift_to_new_york_dst, {"TZ": "America/New_York"}),
)


def main(args: Sequence[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="shifted-clock-") as tmp, ExitStack() as files:
        running = []
        for n, (name, shift, extra) in enumerate(RUNS):
            now = datetime.now(UTC)
            shift_s = shift(now)  # worked out as the run starts: the moment stays ahead
            env = {**os.environ, **extra, "NOTIFIER_TEST_CLOCK_SHIFT_S": str(shift_s)}
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(SITE), str(ROOT), os.environ.get("PYTHONPATH")])
            )
            command = [sys.executable, "-m", "pytest", "-q"]
            command += ["-p", "no:cacheprovider", "-m", "not slow", f"--basetemp={tmp}/{n}"]
            # time-machine is imported before pytest (sitecustomize), too early
            # for pytest to rewrite its plugin's asserts: harmless, and said.
            command += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
            command += list(args or TIME_TESTS)
            log = files.enter_context(Path(tmp, f"{n}.log").open("w+"))
            shown = f"{now + timedelta(seconds=shift_s):%Y-%m-%d %H:%M:%S} UTC"
            zone = extra.get("TZ", "the machine's zone")
            running.append((name, f"{shown}, TZ {zone}", log, subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT
            )))  # fmt: skip
        rows = []
        for name, shown, log, process in running:
            try:
                code = process.wait(timeout=max(1.0, started + RUN_LIMIT_S - time.monotonic()))
            except subprocess.TimeoutExpired:  # a hang fails the run, not CI's whole budget
                process.kill()
                code = process.wait()
            log.seek(0)
            output = log.read()
            print(f"--- {name}: the clock read {shown} at the start", flush=True)
            print(output if code else output.strip().splitlines()[-1], flush=True)
            rows.append((name, code, *counts(output)))
    print(f"\n{'run':<18}{'result':<10}passed  failed   (all three in "
          f"{time.monotonic() - started:.0f} s)")  # fmt: skip
    for name, code, passed, failed in rows:
        print(f"{name:<18}{'ok' if code == 0 else f'exit {code}':<10}{passed:>6}  {failed:>6}")
    passed, failed = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(f"shifted-clock: {passed} passed, {failed} failed")
    return max(code for _, code, _, _ in rows)


def counts(output: str) -> tuple[int, int]:
    """(passed, failed or errored) from pytest's closing line."""
    found = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error)", output)}
    return found.get("passed", 0), found.get("failed", 0) + found.get("error", 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
