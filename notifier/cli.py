"""``planfix-notifier`` — the command line.

Exit codes: 0 success; 1 the command ran and found a failure (a poll error,
a failing check); 2 bad usage or configuration; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, find_config, load_config
from .emulator import Account, Emulator, Settings, populate
from .planfix import ClientSettings, PlanfixClient, PlanfixError, StatusCatalog, Task

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="planfix-notifier",
        description="Watch PlanFix tasks and alert Telegram and e-mail when they change.",
        epilog="Exit codes: 0 ok, 1 a failure was found, 2 bad usage or config, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    poll = commands.add_parser("poll", help="poll the given tasks once and print them")
    poll.add_argument("task_ids", nargs="+", type=int, metavar="TASK_ID")
    poll.add_argument("--config", help="the TOML file (default: see README)")

    demo = commands.add_parser(
        "demo", help="the emulator with a demo account, polled on embedded defaults"
    )
    demo.add_argument("--tasks", type=int, default=12, help="tasks in the demo account")

    emulator = commands.add_parser("emulator", help="run the PlanFix emulator on a loopback port")
    emulator.add_argument("--host", default="127.0.0.1", help="a loopback address")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--tasks", type=int, default=20, help="tasks to create at start")
    emulator.add_argument("--quota", type=int, default=5000, help="requests per day")
    emulator.add_argument("--seed", type=int, default=7, help="seed of the generated tasks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "poll":
            return asyncio.run(_poll(args.task_ids, args.config))
        if args.command == "demo":
            return asyncio.run(_demo(args.tasks))
        if args.command == "emulator":
            return _emulator(args)
    except ConfigError as exc:
        print(f"planfix-notifier: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_USAGE


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


async def _poll_and_print(client: PlanfixClient, task_ids: Sequence[int]) -> int:
    catalog = await client.status_catalog()
    results = await client.get_tasks(task_ids)
    print(f"{'id':>6} {'номер':<6} {'статус':<14} {'срок':<12} {'':<22} название")
    failures = 0
    for task_id, result in results.items():
        if isinstance(result, PlanfixError):
            failures += 1
            print(f"{task_id:>6} ! {result}")
        else:
            print(format_task(result, catalog))
    return EXIT_FAILURE if failures else EXIT_OK


async def _poll(task_ids: Sequence[int], config_path: str | None) -> int:
    config = load_config(find_config(config_path))
    async with PlanfixClient(config.planfix.client_settings()) as client:
        return await _poll_and_print(client, task_ids)


async def _demo(task_count: int) -> int:
    account = Account(Settings())
    populate(account, task_count)
    with Emulator(account) as emulator:
        settings = ClientSettings(
            account=account.settings.account,
            endpoint=emulator.endpoint,
            api_key=account.settings.api_key,
            token=account.settings.token,
            timezone=account.settings.timezone,
        )
        print(f"PlanFix emulator on {emulator.endpoint}, account {settings.account!r}")
        async with PlanfixClient(settings) as client:
            code = await _poll_and_print(client, sorted(account.tasks))
        print(f"requests made: {account.snapshot()['requests']}")
    return code


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
