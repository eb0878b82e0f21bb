"""Soak: two hours of the service's day, at an accelerated poll rate.

Two hours at PlanFix's ceiling of 1 request/s is 7200 requests; the service
makes them at 20 requests/s (about six minutes), task.get by task.get over 200
watched tasks, while tasks change every half second and the alerts go to
Telegram and e-mail, /metrics is scraped and the configuration is reloaded
(SIGHUP) every minute. Resident memory and open file descriptors of the
service's process are sampled from /proc; after a warm-up quarter both must be
flat. SOAK_REQUESTS shortens (or lengthens) the run. The figures go to
bench/results/soak.json and into the README under the reliability table.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.smtp import SmtpServer
from tests.fakes.telegram import TelegramServer
from tests.stored import stored
from tests.test_delivery import CHAT, _toml
from tests.test_operations import service_config, wait_for

REQUESTS = int(os.environ.get("SOAK_REQUESTS", "7200"))
RATE = 20  # requests per second: 20× PlanFix's documented limit
TASKS = 200
RESULTS = Path("bench/results/soak.json")
RSS_SLACK_MB = 8.0  # allocator noise: arenas, SQLite's page cache filling up
FD_SLACK = 3  # sockets that happen to be open at a sample (SMTP, HTTP pools)


def sample(pid: int) -> tuple[float, int]:
    """(resident MB, open file descriptors) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def requests_made(control: EmulatorControl) -> int:
    return sum(control.state()["requests"].values())


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_two_hours_of_polling_leave_memory_and_descriptors_flat(
    emulator: Emulator,
    control: EmulatorControl,
    telegram: TelegramServer,
    smtp_plain: SmtpServer,
    tmp_path: Path,
) -> None:
    quota = RATE * 86_400 * 2  # the planner spreads a day's quota: this one lets it use the rate
    control.configure(daily_quota=quota, supports_multi=False)
    emulator.account.settings.daily_quota = quota
    ids = [control.create_task(title=f"Задача {n}", status=1)["id"] for n in range(TASKS)]
    data = service_config(emulator, telegram, tmp_path, ids)
    data["planfix"].update(requests_per_second=RATE, daily_quota=quota)
    data["channels"]["mail"] = smtp_plain.options()
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    metrics = f"http://{data['metrics']['listen']}/metrics"
    rng = random.Random(7)
    stop = threading.Event()
    changes = 0

    def stream() -> None:
        nonlocal changes
        while not stop.wait(0.5):
            control.change_task(rng.choice(ids), status=rng.choice([1, 2, 3, 4]))
            changes += 1

    process = subprocess.Popen(
        [sys.executable, "-m", "notifier", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    samples: list[tuple[float, int, float, int]] = []  # (seconds, requests, MB, fds)
    changer = threading.Thread(target=stream, daemon=True)
    started = time.monotonic()
    try:
        wait_for(lambda: requests_made(control) >= TASKS, within=60)  # the baselines
        changer.start()
        last_reload = time.monotonic()
        while (made := requests_made(control)) < REQUESTS:
            rss, fds = sample(process.pid)
            samples.append((time.monotonic() - started, made, rss, fds))
            with urllib.request.urlopen(metrics, timeout=5) as answer:
                answer.read()
            if time.monotonic() - last_reload > 60:
                process.send_signal(signal.SIGHUP)
                last_reload = time.monotonic()
            assert process.poll() is None, "the service died"
            time.sleep(2)
        ended = time.monotonic() - started
        stop.set()
        changer.join()
        wait_for(lambda: bool(telegram.fake.sent) and bool(smtp_plain.inbox.messages))
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    steady = samples[len(samples) // 4 :]  # after the warm-up quarter
    window = max(3, len(steady) // 5)
    rss_start = statistics.median(s[2] for s in steady[:window])
    rss_end = statistics.median(s[2] for s in steady[-window:])
    fds_start = max(s[3] for s in steady[:window])
    fds_end = max(s[3] for s in steady[-window:])
    outbox = stored(tmp_path / "state.sqlite3", lambda store: store.outbox_counts())
    figures = {
        "requests": made,
        "minutes": round(ended / 60, 1),
        "changes": changes,
        "telegram_messages": len(telegram.fake.texts(CHAT)),
        "mails": len(smtp_plain.inbox.messages),
        "outbox": outbox,
        "rss_mb": [round(rss_start, 1), round(rss_end, 1)],
        "fds": [fds_start, fds_end],
        "samples": samples,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1))
    print(
        f"\n| requests | minutes | changes | RSS MB start → end | fds start → end |\n"
        f"|---|---|---|---|---|\n"
        f"| {figures['requests']} | {figures['minutes']} | {changes} "
        f"| {rss_start:.1f} → {rss_end:.1f} | {fds_start} → {fds_end} |"
    )
    # sent, or kept for the next start (Telegram's 20 a minute to a group paces the tail)
    assert outbox.get("dead", 0) == 0 and outbox.get("sent", 0) > 0, outbox
    assert rss_end - rss_start <= RSS_SLACK_MB, f"RSS grew {rss_start:.1f} → {rss_end:.1f} MB"
    assert fds_end <= fds_start + FD_SLACK, f"descriptors grew {fds_start} → {fds_end}"
