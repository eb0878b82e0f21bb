"""kill -9 the service at seeded random moments during a stream of task
changes: every change the service recorded is alerted at least once, so is the
newest title of every task, and duplicates never exceed what was in flight at
the kills (one message per kill: one event a message)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from notifier.emulator import Emulator, EmulatorControl
from tests.fakes.telegram import TelegramServer
from tests.stored import stored
from tests.test_delivery import _toml, settings

KILLS = 30
RESULTS = Path("bench/results/crashes.json")
TASKS = 20
# A private chat: a group takes 20 messages a minute (the channel paces to
# that), and the ~150 alerts of this run would need 8 minutes to arrive.
CHAT = 4242


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing(
    emulator: Emulator, control: EmulatorControl, telegram: TelegramServer, tmp_path: Path
) -> None:
    control.configure(daily_quota=1_000_000)
    emulator.account.settings.daily_quota = 1_000_000
    ids = [control.create_task(title=f"Задача {n} v0", status=1)["id"] for n in range(TASKS)]
    data = settings(emulator, telegram, tmp_path / "state.sqlite3", ids)
    data["watch"]["events"] = ["title_changed"]
    data["channels"]["team"]["group"] = False  # one event a message: duplicates are countable
    data["channels"]["team"]["chat_ids"] = [CHAT]
    config = tmp_path / "notifier.toml"
    config.write_text(_toml(data))
    rng = random.Random(20261123)
    made: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        version = 0
        while not stop.is_set():
            version += 1
            for n, task_id in enumerate(ids):
                if stop.wait(0.25):
                    return
                title = f"Задача {n} v{version}"
                control.change_task(task_id, title=title)
                made.append(title)

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    service = start()
    time.sleep(2.5)  # the baselines
    changer = threading.Thread(target=stream, daemon=True)
    changer.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 2.0))
            service.send_signal(signal.SIGKILL)
            service.wait()
            service = start()
        stop.set()
        changer.join()
        wanted = {title for title in made}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = " ".join(telegram.fake.texts(CHAT))
            if all(f"→ «{title}»" in shown for title in wanted):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    texts = telegram.fake.texts(CHAT)
    # Changes to one task faster than the service's polls coalesce (the older
    # title is never seen): the newest title of every task must be alerted,
    # and so must every title that stood for a full poll interval.
    seen = Counter(title for text in texts for title in wanted if f"→ «{title}»" in text)
    latest = {
        f"Задача {n} v"
        + str(max(int(t.rsplit("v", 1)[1]) for t in made if t.startswith(f"Задача {n} v")))
        for n in range(TASKS)
    }
    missing = sorted(latest - set(seen))
    assert missing == [], f"lost: {missing}"
    # Nothing written down is lost: every change in the store was delivered.
    state = tmp_path / "state.sqlite3"
    events = stored(state, lambda store: store.events_after(0, limit=100_000))
    recorded = {e.new for _, e in events if e.new is not None}
    outbox = stored(state, lambda store: store.outbox_counts())
    assert recorded and not recorded - set(seen), f"recorded, not alerted: {recorded - set(seen)}"
    assert set(outbox) == {"sent"}, outbox
    coverage = len(seen) / len(wanted)
    assert coverage >= 0.95, f"only {coverage:.0%} of {len(wanted)} changes alerted"
    duplicates = sum(count - 1 for count in seen.values())
    assert duplicates <= KILLS, f"{duplicates} duplicates for {KILLS} kills"
    figures = {
        "changes": len(wanted),
        "kills": KILLS,
        "recorded": len(recorded),
        "alerted": len(seen),
        "duplicates": duplicates,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures))
    print(f"\n{figures}")
