"""Dispatch under Telegram's flood limits: 300 alerts, one message each, to
10 chats (half of them groups), through the real dispatcher and Telegram
channel, against the fake Bot API server enforcing 1 message/s per chat,
20/min per group and 30/s overall with 429s.

The floor is the earliest schedule those limits allow (computed); the target
is total time <= 1.2x the floor with no 429 received — on an idle machine, and
again with a CPU hog beside it (one spinning process per core), where our
clock and Telegram's arrival times drift apart.

    python -m bench.dispatch [--alerts 300] [--chats 10]   (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings
from notifier.alerts.events import Event, EventKind, TaskSummary
from notifier.alerts.render import Renderer
from notifier.channels.telegram import TelegramChannel, TelegramOptions
from notifier.ops import logging as oplog
from notifier.store import Store
from tests.fakes.telegram import FakeTelegram, TelegramServer

RESULTS = Path(__file__).parent / "results"


def floor_seconds(per_chat: int, group: bool) -> float:
    """The last send time of the earliest schedule: 1/s, and 20 in any 60 s for groups."""
    times: list[float] = []
    for k in range(per_chat):
        t = times[-1] + 1 if times else 0.0
        if group and k >= 20:
            t = max(t, times[k - 20] + 60)
        times.append(t)
    return times[-1]


def to_chat(chat: str) -> Callable[[Event], list[tuple[str, str]]]:
    return lambda _: [("team", chat)]


def chats(n: int) -> list[str]:
    return [str(-1001000000000 - i) if i % 2 else str(100000 + i) for i in range(n)]


async def run(alerts: int, n_chats: int) -> dict[str, object]:
    fake = FakeTelegram(enforce_limits=True)
    chat_ids = chats(n_chats)
    with TelegramServer(fake) as server, tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.sqlite3")
        renderer = Renderer(account="bench")
        options = TelegramOptions(
            type="telegram",
            bot_token=fake.token,
            chat_ids=chat_ids,
            api_url=server.url,
            group=False,
        )
        channel = TelegramChannel("team", options, renderer)
        now = time.time()
        at = datetime.now(UTC)
        for i in range(alerts):
            task = TaskSummary(
                1000 + i,
                i,
                f"Задача {i}",
                2,
                "В работе",
                "AVERAGE",
                "Проект",
                ("Иван",),
                None,
                True,
            )
            event = Event(EventKind.STATUS_CHANGED, at, task.id, task, "Новая", "В работе")
            to = to_chat(chat_ids[i % n_chats])
            await store.add_events([event], [to(event)], now, queued_at=now)
        dispatcher = Dispatcher(
            store, {"team": channel}, DispatchSettings(retry_base_s=1, retry_max_s=5)
        )
        started = time.monotonic()
        dispatcher.start()
        dispatcher.wake()
        while (await store.outbox_counts()).get("pending", 0):  # noqa: ASYNC110 - the store is the truth
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        await dispatcher.stop()
        await channel.aclose()
        await store.close()
    per_chat = alerts // n_chats
    floor = max(floor_seconds(per_chat, chat.startswith("-")) for chat in chat_ids)
    return {
        "alerts": alerts,
        "chats": n_chats,
        "groups": sum(c.startswith("-") for c in chat_ids),
        "seconds": took,
        "floor_seconds": floor,
        "ratio": took / floor,
        "http_429": fake.count_429(),
        "messages": len(fake.sent),
    }


@contextlib.contextmanager
def cpu_hog(per_core: int = 2) -> Iterator[int]:
    """Processes spinning, ``per_core`` on each core, while the block runs:
    the bench (service and fake Telegram) then gets a third of a core's time."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(per_core * (os.cpu_count() or 1))
    ]
    try:
        yield len(spinners)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="dispatch under Telegram's limits")
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--chats", type=int, default=10)
    args = parser.parse_args()
    oplog.setup(level="WARNING")
    idle = asyncio.run(run(args.alerts, args.chats))
    with cpu_hog() as cores:
        busy = asyncio.run(run(args.alerts, args.chats))
    print(
        f"{idle['alerts']} alerts to {idle['chats']} chats ({idle['groups']} groups), one "
        f"message each; floor the limits allow {idle['floor_seconds']:.1f} s"
    )
    print(f"{'machine':<28}{'time, s':>9}{'ratio':>8}{'429s':>6}{'delivered':>11}")
    for name, result in (("idle", idle), (f"{cores} processes spinning beside", busy)):
        print(
            f"{name:<28}{result['seconds']:>9.1f}{result['ratio']:>8.2f}"
            f"{result['http_429']:>6d}{result['messages']:>11d}"
        )
    print("target: ratio <= 1.20 and 0 x 429 on both")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dispatch.json").write_text(json.dumps({"idle": idle, "cpu_hog": busy}, indent=2))


if __name__ == "__main__":
    main()
