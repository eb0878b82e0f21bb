"""``planfix-notifier`` — the command line.

Exit codes: 0 success; 1 the command ran and found a failure (a poll error,
a failing check); 2 bad usage, configuration or state file; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .alerts.events import TASK_EVENT_KINDS
from .app import Service
from .config import (
    Config,
    ConfigError,
    config_from_dict,
    find_config,
    load_config,
)
from .emulator import Account, Emulator, Settings, populate
from .emulator.scenario import Scenario, build
from .planfix import StatusCatalog, Task
from .store import StoreError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planfix-notifier",
        description="Watch PlanFix tasks and alert Telegram and e-mail when they change.",
        epilog="Exit codes: 0 ok, 1 a failure was found, 2 bad usage or config, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the service, in the foreground")
    run.add_argument("--config", help="the TOML file (default: see README)")

    poll = commands.add_parser(
        "poll", help="poll the given tasks once: print each card and the events it would raise"
    )
    poll.add_argument("task_ids", nargs="+", type=int, metavar="TASK_ID")
    poll.add_argument("--config", help="the TOML file (default: see README)")
    poll.add_argument(
        "--send", action="store_true", help="record the new state and deliver the events"
    )

    demo = commands.add_parser(
        "demo",
        help="the emulator with a scripted, changing account, watched on embedded defaults",
    )
    demo.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    demo.add_argument(
        "--pace", type=float, default=1.0, help="script speed factor (0.2 = 5x faster)"
    )

    emulator = commands.add_parser("emulator", help="run the PlanFix emulator on a loopback port")
    emulator.add_argument("--host", default="127.0.0.1", help="a loopback address")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--tasks", type=int, default=20, help="tasks to create at start")
    emulator.add_argument("--quota", type=int, default=5000, help="requests per day")
    emulator.add_argument("--seed", type=int, default=7, help="seed of the generated tasks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return asyncio.run(_run(load_config(find_config(args.config))))
        if args.command == "poll":
            config = load_config(find_config(args.config))
            return asyncio.run(_poll(config, args.task_ids, send=args.send))
        if args.command == "demo":
            return asyncio.run(_demo(args.seconds, args.pace))
        if args.command == "emulator":
            return _emulator(args)
    except (ConfigError, StoreError) as exc:
        print(f"planfix-notifier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_USAGE


async def _until_stopped(seconds: float | None) -> None:
    """Wait for SIGINT/SIGTERM, or ``seconds``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _run(config: Config, seconds: float | None = None) -> int:
    service = Service(config)
    service.start()
    try:
        await _until_stopped(seconds)
    finally:
        await service.stop()
    return EXIT_OK


def format_task(task: Task, catalog: StatusCatalog) -> str:
    status = catalog.name(task.status, task.status_set) or str(task.status)
    deadline = task.deadline.strftime("%d.%m %H:%M") if task.deadline else "—"
    flags = "".join(
        mark
        for mark, on in (
            ("просрочена ", task.is_overdued),
            ("скоро срок", task.is_close_to_deadline),
        )
        if on
    )
    number = f"#{task.general or ''}"
    return f"{task.id:>6} {number:<6} {status:<14} {deadline:<12} {flags:<22} {task.title}"


async def _poll(config: Config, task_ids: Sequence[int], *, send: bool) -> int:
    service = Service(config)
    service.poller.group_wait_s = 0  # one command, one message: nothing to wait for
    try:
        with service.ledger.on_demand():
            results = await service.poller.poll(task_ids, save=send)
        if send:
            undelivered = await service.dispatcher.drain(config.alerts.retry_max_s)
        catalog = service.poller.catalog
        print(f"{'id':>6} {'номер':<6} {'статус':<14} {'срок':<12} {'':<22} название")
        for result in results:
            if result.task is not None:
                print(format_task(result.task, catalog))
            else:
                print(f"{result.task_id:>6} ! {result.error}")
            if not send:
                for event in result.events:
                    print(f"{'':>6}   would raise: {service.renderer.text([event])}")
    finally:
        await service.stop()
    if send and undelivered:
        print(f"{undelivered} deliveries still pending in the outbox", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if any(r.error for r in results) else EXIT_OK


def demo_config(emulator: Emulator, task_ids: Sequence[int], state_dir: Path) -> Config:
    """The embedded defaults `make run` shows: poll fast, alert on everything."""
    settings = emulator.account.settings
    return config_from_dict(
        {
            "planfix": {
                "account": settings.account,
                "endpoint": emulator.endpoint,
                "api_key": settings.api_key,
                "token": settings.token,
                "timezone": settings.timezone,
                "daily_quota": DEMO_QUOTA,
                "requests_per_second": 5,
            },
            "state": {"path": str(state_dir / "demo.sqlite3")},
            "watch": {
                "tasks": list(task_ids),
                "events": list(TASK_EVENT_KINDS),
                "min_interval_s": 2,
            },
            "alerts": {"group_wait_s": 1},
            "channels": {"console": {"type": "console"}},
        },
        source="(demo defaults)",
        environ={},
    )


DEMO_QUOTA = 50000


async def _demo(seconds: float | None, pace: float) -> int:
    account = Account(Settings(daily_quota=DEMO_QUOTA))
    ids = build(account)
    with Emulator(account) as emulator, tempfile.TemporaryDirectory() as state_dir:
        config = demo_config(emulator, ids, Path(state_dir))
        print(
            f"PlanFix emulator on {emulator.endpoint}: {len(ids)} tasks, changed every few "
            "seconds; one falls overdue at the next whole minute. Watching… (Ctrl-C stops)",
            flush=True,
        )
        scenario = Scenario(account, ids, pace=pace)
        scenario.start()
        try:
            return await _run(config, seconds)
        finally:
            scenario.stop()


def _emulator(args: argparse.Namespace) -> int:
    account = Account(Settings(daily_quota=args.quota))
    populate(account, args.tasks, seed=args.seed)
    emulator = Emulator(account, host=args.host, port=args.port).start()
    settings = account.settings
    print(
        f"PlanFix emulator on {emulator.endpoint} — account {settings.account!r}, "
        f"api_key {settings.api_key!r}, token {settings.token!r} "
        f"(or login {settings.login!r} / {settings.password!r}); "
        f"control API at {emulator.base_url}/control/state. Ctrl-C stops it.",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    finally:
        emulator.stop()
