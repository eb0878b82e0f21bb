"""``planfix-notifier`` — the command line.

Exit codes: 0 success; 1 the command ran and found a failure (a failing
check, a task that could not be read, an alert not delivered); 2 bad usage,
configuration or state file; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import httpx

from . import __version__
from .alerts.events import TASK_EVENT_KINDS, Event, EventKind, TaskSummary
from .alerts.render import TemplateProblem
from .app import Service, build_channels, renderer_for
from .bot.resolve import linked_account, parse_task
from .channels.base import Delivered, Message, Misconfigured, RetryLater, SendResult
from .config import Config, ConfigError, config_from_dict, find_config, load_config
from .emulator import Account, Emulator, Settings, populate
from .emulator.scenario import Scenario, build
from .ops import logging as oplog
from .ops.leases import poll_lease
from .ops.overview import PAGE, gather
from .ops.status_text import render_text
from .ops.systemd import notify, watchdog, watchdog_interval_s
from .planfix import PlanfixError, StatusCatalog, Task, TransportError
from .store import Store, StoreError, instance_lock, open_store
from .watch.account import AccountWatch
from .watch.poller import Poller
from .watch.quota import QuotaLedger
from .watch.sets import NUMBER_NOT_ID
from .web.ops import operator_routes
from .web.push import serve_push
from .web.server import HttpServer, parse_listen

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
NOTHING_TO_WATCH = "nothing to watch; add watch.numbers, tasks, projects or filters"
Row = tuple[str, bool | None, str]  # check's: (what, ok / None for a warning, detail)
ALL_TASKS = 10_000_000  # status --all
log = oplog.get("notifier.cli")


class _Parser(argparse.ArgumentParser):
    """Bad usage in one line, as every other mistake (argparse adds a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (--help for usage)\n")


def _log_level(text: str) -> str:
    if text.upper() not in oplog.LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(oplog.LEVELS)}")
    return text.upper()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="planfix-notifier",
        description="Watch PlanFix tasks and alert Telegram and e-mail when they change.",
        epilog="Exit codes: 0 ok, 1 a failure was found, 2 bad usage, config or state file, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    log_level: dict[str, Any] = {
        "type": _log_level, "metavar": "LEVEL",
        "help": "DEBUG, INFO, WARNING or ERROR, before or after the command (default: INFO "
        "for run, demo and emulator; ERROR for the others, which print what they find)",
    }  # fmt: skip
    parser.add_argument("--log-level", default=None, **log_level)
    # After the command too: its parser must not put back the default over one given before.
    after = _Parser(add_help=False)
    after.add_argument("--log-level", default=argparse.SUPPRESS, **log_level)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, text: str, *, config: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[after])
        if config:
            sub.add_argument(
                "--config",
                help="the TOML file (default: $PLANFIX_NOTIFIER_CONFIG, ./notifier.toml, "
                "/etc/planfix-notifier/config.toml)",
            )
        return sub

    def account_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--account", help="NAME of [accounts.NAME], or [planfix]'s account (default: the first)"
        )

    init = command("init", "write a commented sample config to start from", config=False)
    init.add_argument("path", nargs="?", default="notifier.toml", help="default: ./notifier.toml")
    command("run", "the service, in the foreground; SIGHUP reloads the config, SIGTERM stops it")
    command("check", "check the config, the PlanFix log-in, each channel and the state file")
    poll = command("poll", "poll tasks once: print each card and the events it would raise")
    poll.add_argument(
        "tasks", nargs="+", metavar="TASK",
        help="a task id (1001), or a number as people see it (#418) or its link",
    )  # fmt: skip
    poll.add_argument("--send", action="store_true", help="record the state and deliver the events")
    account_option(poll)
    test = command("test-alert", "send a sample alert through the channels")
    test.add_argument("--channel", help="only this channel (default: all)")
    status = command(
        "status", "health, watched tasks and their next polls, quota, outbox and dead letters"
    )
    status.add_argument("--all", action="store_true", help="every task (default: the first 200)")
    account_option(status)
    quota = command("quota", "the day's PlanFix request count, and what blocks polling if anything")
    quota.add_argument(
        "--reset", action="store_true",
        help="forget a stale block (a 0007 from before a plan change, a header saying 0)",
    )  # fmt: skip
    account_option(quota)
    push_test = command(
        "push-test", "send a sample push to the [push] endpoint and say what came back"
    )
    push_test.add_argument("--url", help="where PlanFix sends it (default: push.listen and path)")
    which = push_test.add_mutually_exclusive_group()
    which.add_argument("--task", type=int, help="a task id (default: the first in watch.tasks)")
    which.add_argument("--number", type=int, help="a task number, as in the task's link")
    account_option(push_test)
    demo = command("demo", "the emulator with a scripted, changing account, watched", config=False)
    demo.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    demo.add_argument("--pace", type=float, default=1.0, help="script speed (0.2 = 5x faster)")
    emulator = command("emulator", "the PlanFix emulator alone, on a loopback port", config=False)
    emulator.add_argument("--host", default="127.0.0.1", help="a loopback address")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument("--tasks", type=int, default=20, help="tasks to create at start")
    emulator.add_argument("--quota", type=int, default=5000, help="requests per day")
    emulator.add_argument("--seed", type=int, default=7, help="seed of the generated tasks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A one-shot command says what it found in its own output; its log lines
    # would only repeat that, as JSON, between the lines of a table.
    quiet = args.command not in ("run", "demo", "emulator")
    oplog.setup(level=args.log_level or ("ERROR" if quiet else "INFO"))
    try:
        if args.command == "init":
            return _init(Path(args.path))
        if args.command in ("demo", "emulator"):
            if args.command == "demo":
                return asyncio.run(_demo(args.seconds, args.pace))
            return _emulator(args)
        path = find_config(args.config)
        config = load_config(path)
        oplog.REDACTOR.set_secrets(config.secrets())
        oplog.use_zone(config.first.planfix.timezone)
        if args.command == "run":
            return asyncio.run(_run_alone(config, path))
        if args.command == "check":
            return asyncio.run(_check(config, path))
        account = getattr(args, "account", None)
        try:
            config.account_named(account)
        except ValueError as exc:
            raise ConfigError(f"--account: {exc}") from None
        if args.command == "poll":
            return asyncio.run(_poll(config, args.tasks, send=args.send, account=account))
        if args.command == "test-alert":
            return asyncio.run(_test_alert(config, args.channel))
        if args.command == "status":
            return _status(config, every=args.all, account=account)
        if args.command == "quota":
            return _quota(config, reset=args.reset, account=account)
        if args.command == "push-test":
            return asyncio.run(_push_test(config, args.url, args.task, args.number, account))
    except (ConfigError, StoreError) as exc:  # (a database's error may quote its address)
        print(f"planfix-notifier: {oplog.REDACTOR.scrub(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except TemplateProblem as exc:
        print(f"planfix-notifier: alerts.templates: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_USAGE


# --- init -------------------------------------------------------------------------------


def _init(path: Path) -> int:
    if path.exists():
        print(f"planfix-notifier: {path} exists; nothing written", file=sys.stderr)
        return EXIT_USAGE
    sample = resources.files("notifier").joinpath("data/notifier.example.toml").read_text("utf-8")
    try:
        path.write_text(sample, encoding="utf-8")
        path.chmod(0o600)  # it will hold secrets
    except OSError as exc:
        print(f"planfix-notifier: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}: set planfix.account, api_key and token (or their *_file), the tasks "
          "to watch and a channel; then:")  # fmt: skip
    print(f"  planfix-notifier check --config {path}")
    return EXIT_OK


# --- run --------------------------------------------------------------------------------


async def _run_alone(config: Config, path: Path) -> int:
    """The service. On SQLite, the only one on its file (two would send every
    alert twice); on PostgreSQL, one of the instances sharing the work by leases."""
    lock = instance_lock(config.state)
    if lock is None:
        return await _run(config, path)
    await lock.take()
    try:
        return await _run(config, path)
    finally:
        await lock.give_back()


async def _run(
    config: Config,
    path: Path | None,
    seconds: float | None = None,
    announce: Callable[[str], None] | None = None,
) -> int:
    """The service until a signal (or ``seconds``). ``announce``: the demo's,
    told the status page's URL; its port, when taken, is any free one."""
    service = Service(config)
    web: HttpServer | None = None
    if config.metrics.listen:
        web = HttpServer(config.metrics.listen, operator_routes(config, service))
        try:
            await web.start()
        except OSError as exc:
            if announce is None:
                await service.stop()
                where = f"{path}: " if path is not None else ""
                raise ConfigError(
                    f"{where}metrics.listen {config.metrics.listen}: cannot listen there "
                    f"({exc.strerror})"
                ) from None
            web = HttpServer("127.0.0.1:0", operator_routes(config, service))
            await web.start()
        if announce is not None:
            announce(f"http://{_url_host(web.host)}:{web.port}/")
    try:
        push = await _start_push(config, service)
    except ConfigError:
        if web is not None:
            await web.stop()
        raise
    try:
        await service.start()
    except StoreError:
        for server in (web, push):
            if server is not None:
                await server.stop()
        await service.stop()
        raise
    await service.start_bot()
    pinger = None
    interval = watchdog_interval_s()
    if interval:
        pinger = asyncio.create_task(watchdog(interval))
    notify("READY=1")
    watching = sum(len(w.poller.records) for w in service.watches.values())
    log.info("started", watching=watching, channels=sorted(service.channels))
    if web is not None and config.metrics.page_on:
        log.info("status page", url=f"http://{_url_host(web.host)}:{web.port}/")
    if config.metrics.listen and not config.metrics.page_on:
        log.info("status page off: metrics.listen is not a loopback address (it shows task "
                 "titles); metrics.status_page = true serves it there")  # fmt: skip
    watches = [a.watch for a in config.watched_accounts]
    if not (any(w.poller.records for w in service.watches.values()) or config.push.auto_watch
            or any(w.tasks or w.numbers or w.projects or w.filters for w in watches)):  # fmt: skip
        log.warning(
            NOTHING_TO_WATCH + (" (or /watch in a chat with the bot)" if service.bot else "")
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if path is not None:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(_reload(service, path))
        )
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    finally:
        notify("STOPPING=1")
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        for server in (web, push):  # first: their answers read the store, closed below
            if server is not None:
                await server.stop()
        left = await service.stop(drain_s=config.alerts.shutdown_drain_s)
        if pinger is not None:
            pinger.cancel()
        log.info("stopped", undelivered=left)
    return EXIT_OK


async def _start_push(config: Config, service: Service) -> HttpServer | None:
    """The push endpoint, on a listener of its own (it faces PlanFix's cloud)."""
    if not config.push.listen:
        return None
    try:
        inboxes = {path: service.watches[name].push for path, name in config.push_paths().items()}
        server = await serve_push(config.push, inboxes, service.metrics.pushes_seen)
    except OSError as exc:
        await service.stop()
        raise ConfigError(
            f"push.listen {config.push.listen}: cannot listen there ({exc.strerror})"
        ) from None
    log.info("push endpoint listening", listen=f"{server.host}:{server.port}",
             path=config.push.path)  # fmt: skip
    return server


async def _reload(service: Service, path: Path) -> None:
    """SIGHUP: a bad new config is refused and the running one kept."""
    notify("RELOADING=1")
    refused = "new configuration refused; the running one is kept"
    try:
        config = load_config(path)
        oplog.REDACTOR.set_secrets([*config.secrets(), *service.config.secrets()])
        later = await service.reload(config)
    except (ConfigError, TemplateProblem) as exc:
        log.error(refused, error=str(exc))
    except Exception as exc:  # a channel that cannot be built, …
        log.error(refused, error=f"{type(exc).__name__}: {exc}")
    else:
        if later:
            log.warning("these sections change only after a restart", sections=later)
    notify("READY=1")


# --- check ------------------------------------------------------------------------------


async def _check(config: Config, path: Path) -> int:
    rows: list[Row] = [("config", True, str(path))]
    try:
        service = Service(config, keep_watch_set=False)
    except StoreError as exc:
        rows.append((_STATE_ROW[config.state.url is None], False, str(exc)))
        return _table(rows)
    except TemplateProblem as exc:
        rows.append(("templates", False, str(exc)))
        return _table(rows)
    try:
        await service.load()
    except StoreError as exc:
        rows.append((_STATE_ROW[config.state.url is None], False, str(exc)))
        await service.stop()
        return _table(rows)
    try:
        rows.append(await _state_writable(service.store, config))
        several = len(service.watches) > 1
        for watch in service.watches.values():
            rows += await _check_account(watch, f" ({watch.name})" if several else "")
        for name, channel in service.channels.items():
            result = await channel.check()
            rows.append((f"channel {name}", result.ok, result.detail))
        if config.metrics.listen:
            rows.append(await _listen_row("metrics.listen", config.metrics.listen))
        if config.push.listen:
            rows.append(await _listen_row("push.listen", config.push.listen))
    finally:
        await service.stop()
    return _table(rows)


async def _check_account(watch: AccountWatch, of: str) -> list[Row]:
    """Log in to one account, read its statuses and its watch set; its quota."""
    rows: list[Row] = []
    answered = True
    try:
        with watch.ledger.on_demand():
            if watch.client.login_mode:
                await watch.client.login()
            catalog = await watch.client.status_catalog()
        statuses = sum(len(s) for s in catalog.by_set.values())
        detail = f"account {watch.account.planfix.account!r}, {statuses} statuses known"
        rows.append((f"PlanFix log-in{of}", True, detail))
        rows.append(await _check_watch(watch, of))
    except PlanfixError as exc:
        rows.append((f"PlanFix log-in{of}", False, str(exc)))
        answered = not isinstance(exc, TransportError)
    rows.append(_quota_row(watch.ledger, answered, of))
    return rows


def _quota_row(ledger: QuotaLedger, answered: bool, of: str = "") -> Row:
    left = f"{ledger.remaining} of {ledger.daily_quota} left today by our count"
    if not answered:  # PlanFix's own word (0007, its header) was not heard
        return (f"PlanFix quota{of}", None, f"unknown: PlanFix could not be reached; {left}")
    return (f"PlanFix quota{of}", ledger.remaining > 0, left)


async def _listen_row(key: str, listen: str) -> Row:
    """Can the address be had? (A running service holds it: that is fine too.)"""
    server = HttpServer(listen, {})
    try:
        await server.start()
    except OSError as exc:
        host, port = parse_listen(listen)
        if exc.errno == errno.EADDRINUSE and await _answers(host, port):
            return (key, True, f"{listen} is in use; something answers there (the service?)")
        return (key, False, f"{listen}: cannot listen there ({exc.strerror})")
    await server.stop()
    return (key, True, f"{listen} can be listened on")


async def _answers(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _check_watch(account: AccountWatch, of: str = "") -> Row:
    """Every listed id and number names a task PlanFix knows: a task's number
    (the 418 in …/task/418) put where its id belongs is the usual slip."""
    watch = account.account.watch
    if not (watch.tasks or watch.numbers or watch.projects or watch.filters):
        return (f"watch{of}", None, NOTHING_TO_WATCH)
    with account.ledger.on_demand():
        answers = await account.client.get_tasks(watch.tasks) if watch.tasks else {}
        await account.sets.resolve(keep=False)  # numbers → ids (each remembered for run)
    unknown = sorted(i for i, a in answers.items() if getattr(a, "code", None) == "3001")
    unresolved = [n for n in watch.numbers if await account.store.get_meta(f"number:{n}") is None]
    problems = []
    if unknown:
        ids = ", ".join(map(str, unknown))
        problems.append(f"watch.tasks: PlanFix has no task with id {ids}. {NUMBER_NOT_ID}")
    if unresolved:
        problems.append(f"watch.numbers: no task numbered {', '.join(map(str, unresolved))}")
    if problems:
        return (f"watch{of}", False, "; ".join(problems))
    sets = f"; projects {watch.projects}" if watch.projects else ""
    sets += f"; saved filters {watch.filters}" if watch.filters else ""
    counts = f"{len(watch.tasks)} tasks by id, {len(watch.numbers)} by number{sets}"
    return (f"watch{of}", True, counts)


_STATE_ROW = {True: "state file", False: "state"}  # (SQLite?) → the row's name


async def _state_writable(store: Store, config: Config) -> Row:
    name = _STATE_ROW[config.state.url is None]
    try:
        await store.check_writable()
        version = await store.schema_version()
    except StoreError as exc:
        return (name, False, str(exc))
    where = config.state.path if config.state.url is None else store.where
    return (name, True, f"{where} (schema {version})")


def _table(rows: Sequence[Row]) -> int:
    """ok, WARN (worth a look, not a failure) or FAIL; exit 1 on any FAIL."""
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:  # (a server's error text may echo a secret)
        said = "WARN" if ok is None else "ok  " if ok else "FAIL"
        print(f"{name:<{width}}  {said}  {oplog.REDACTOR.scrub(detail)}")
    return EXIT_FAILURE if any(ok is False for _, ok, _ in rows) else EXIT_OK


# --- status -----------------------------------------------------------------------------


def _status(config: Config, *, every: bool = False, account: str | None = None) -> int:
    """What the running service says at /status.txt; else what the state file
    tells (without health and the next polls: only the service knows them)."""
    limit = ALL_TASKS if every else PAGE
    said, why = _ask_service(config, limit, account)
    if said is not None:
        print(said, end="")
        return EXIT_OK
    return asyncio.run(_status_from_store(config, why, limit, account))


async def _status_from_store(config: Config, why: str, limit: int, account: str | None) -> int:
    store = open_store(config.state)
    try:
        overview = await gather(store, config, time.time(), account=account, limit=limit)
        print(render_text(overview, not_running=why), end="")
    finally:
        await store.close()
    return EXIT_OK


def _url_host(host: str) -> str:
    """A listen address as a client reaches it: a wildcard is this host."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 (a wildcard)
    return f"[{host}]" if ":" in host else host


def _ask_service(config: Config, limit: int, account: str | None) -> tuple[str | None, str]:
    """(/status.txt, or None and why not)."""
    if not config.metrics.listen:
        return None, "metrics.listen is off, so the service cannot be asked"
    host, port = parse_listen(config.metrics.listen)
    url = f"http://{_url_host(host)}:{port}/status.txt"
    try:
        asked: dict[str, str | int] = {"limit": limit}
        if account is not None:
            asked["account"] = account
        answer = httpx.get(url, params=asked, timeout=30.0)
    except httpx.HTTPError:
        return None, f"no service answers at {url}"
    if answer.status_code == 404 and answer.text.startswith("no account"):
        return None, f"the running service says: {answer.text.strip()} (restart it to add one)"
    if answer.status_code in (404, 421):
        why = "see metrics.status_page and metrics.hosts"
        return None, f"the running service does not serve its status at {url} ({why})"
    if answer.status_code != 200:
        return None, f"{url} answered {answer.status_code}"
    return answer.text, ""


# --- push-test ----------------------------------------------------------------------------

PUSH_ANSWERS = {
    200: "accepted: the service reads the task now; an alert follows if it changed",
    401: "refused: the secret differs (push.secret, and the header {header} in the scenario)",
    404: (
        "not found: the path differs (the service listens at push.path, and at "
        "push.path/NAME per account; this was {path})"
    ),
    413: "refused: the body is over 64 KB",
    429: "refused: too many pushes from this address (push.source_rate_per_s)",
}


async def _push_test(
    config: Config, url: str | None, task: int | None, number: int | None, account: str | None
) -> int:
    """What a PlanFix scenario's request gets, sent as the README says to set it up."""
    push = config.push
    chosen = config.account_named(account)
    if push.secret is None or not (push.listen or url):
        print("push-test: no [push] listen is configured (see README: Set up push in PlanFix)")
        return EXIT_USAGE
    if url is None:
        host, port = parse_listen(push.listen)
        url = f"http://{_url_host(host)}:{port}{config.push_path(chosen.name)}"
    if task is None and number is None:
        if not chosen.watch.tasks:
            print("push-test: give --task ID or --number N (watch.tasks is empty)")
            return EXIT_USAGE
        task = chosen.watch.tasks[0]
    body = {"task": task} if task is not None else {"number": number}
    headers = {push.header: push.secret.get_secret_value()}
    print(f"POST {url} {json.dumps(body)} with header {push.header}")
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            answer = await http.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        print(f"no answer: {type(exc).__name__}: {exc or 'connection failed'} — is the service "
              "running with this [push] listen, and the proxy forwarding to it?")  # fmt: skip
        return EXIT_FAILURE
    said = PUSH_ANSWERS.get(answer.status_code, "unexpected")
    print(f"{answer.status_code} {answer.text.strip()[:200]}")
    print(said.format(header=push.header, path=httpx.URL(url).path))
    return EXIT_OK if answer.status_code == 200 else EXIT_FAILURE


def _quota(config: Config, *, reset: bool, account: str | None = None) -> int:
    return asyncio.run(_quota_day(config, reset=reset, account=account))


async def _quota_day(config: Config, *, reset: bool, account: str | None = None) -> int:
    """The day's ledger; with ``reset``, forget a block. A running service
    keeps its own ledger in memory, so the reset is its to do: a SIGHUP."""
    lock = instance_lock(config.state)
    hint = "a running service resets its quota block on reload (SIGHUP)"
    if reset and lock is not None:
        try:
            await lock.take()
        except StoreError as exc:
            print(f"planfix-notifier: {exc}; {hint}", file=sys.stderr)
            return EXIT_USAGE
    chosen = config.account_named(account)
    store = open_store(config.state)
    try:
        lease = poll_lease(chosen.name)
        polling = [h for n, h, _, until in await store.leases(lease)
                   if n == lease and until > time.time()]  # fmt: skip
        if reset and polling:
            print(f"planfix-notifier: {polling[0]} polls on this state; {hint}", file=sys.stderr)
            return EXIT_USAGE
        planfix = chosen.planfix
        ledger = QuotaLedger(store.for_account(chosen.key), daily_quota=planfix.daily_quota,
                             timezone=planfix.timezone)  # fmt: skip
        row = await ledger.load()
        if reset:
            await ledger.reset_block()
        of = f"{chosen.name}: " if len(config.watched_accounts) > 1 else ""
        print(f"{of}quota {row.day} ({planfix.timezone}): {row.used} of "
              f"{ledger.daily_quota} used, {ledger.remaining} left")  # fmt: skip
        blocked = ledger.blocked()
        print(f"blocked: {blocked}" if blocked else "not blocked: polling may go on")
    finally:
        await store.close()
        if reset and lock is not None:
            await lock.give_back()
    return EXIT_OK


# --- test-alert ---------------------------------------------------------------------------


async def _test_alert(config: Config, only: str | None) -> int:
    renderer = renderer_for(config)
    channels = build_channels(config, renderer)
    if only is not None and only not in channels:
        print(
            f"planfix-notifier: no channel {only!r}; there are: {', '.join(channels)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    sample = Event(
        EventKind.STATUS_CHANGED,
        datetime.now(UTC),
        0,
        # No number: a sample has no task in PlanFix to link to.
        TaskSummary(0, None, "Проверка уведомлений planfix-notifier (тест)", 2, "В работе",
                    "AVERAGE", "Тест", ("planfix-notifier",), None, True),
        "Новая",
        "В работе",
        {"test": True},
    )  # fmt: skip
    failed = 0
    for name, channel in channels.items():
        if only is not None and name != only:
            continue
        for recipient in channel.recipients():
            result = await channel.send(Message(name, recipient, (sample,)))
            failed += not isinstance(result, Delivered)
            print(f"{name} → {recipient}: {said_of(result)}")
        await channel.aclose()
    return EXIT_FAILURE if failed else EXIT_OK


def said_of(result: SendResult) -> str:
    """A channel's answer in words, for a person."""
    if isinstance(result, Delivered):
        return "delivered" + (f" ({result.detail})" if result.detail else "")
    if isinstance(result, RetryLater):
        when = f"; the service would retry in {result.after_s:.0f} s" if result.after_s else ""
        return f"not delivered, for now: {result.reason}{when}"
    if isinstance(result, Misconfigured):
        return f"not delivered: the channel's settings need fixing: {result.reason}"
    return f"not delivered, and retrying would not help: {result.reason}"


# --- poll -----------------------------------------------------------------------------------


# The CLI speaks English; PlanFix's own words (status names, titles) stay as they are.
POLL_HEADER = f"{'id':>6} {'number':<6} {'status':<14} {'deadline':<12} {'':<22} title"


def format_task(task: Task, catalog: StatusCatalog) -> str:
    status = catalog.name(task.status, task.status_set) or str(task.status)
    deadline = task.deadline.strftime("%d.%m %H:%M") if task.deadline else "—"
    flags = " ".join(
        mark
        for mark, on in (
            ("overdue", task.is_overdued),
            ("deadline near", task.is_close_to_deadline),
        )
        if on
    )
    number = f"#{task.general or ''}"
    return f"{task.id:>6} {number:<6} {status:<14} {deadline:<12} {flags:<22} {task.title}"


async def _poll(
    config: Config, typed: Sequence[str], *, send: bool, account: str | None = None
) -> int:
    service = Service(config, keep_watch_set=send)  # only --send records anything
    linked = linked_account(typed, config.watched_accounts)  # (a task's link names it)
    if account is None and linked is not None:
        account = linked.name
    watch = service.watch_of(account)
    watch.poller.group_wait_s = 0  # one command, one message: nothing to wait for
    undelivered, unknown = 0, []
    try:
        await service.load()
        with watch.ledger.on_demand():
            task_ids = []
            for text in typed:
                task_id = await _task_id(watch.poller, text)
                if task_id is None:
                    unknown.append(text)
                else:
                    task_ids.append(task_id)
            results = await watch.poller.poll(task_ids, save=send) if task_ids else []
        catalog = watch.poller.catalog
        print(f"{POLL_HEADER}  (times in {watch.account.planfix.timezone})")
        for text in unknown:
            print(f"{text:>6} ! not a task id, nor a number PlanFix knows")
        for result in results:
            if result.task is not None:
                print(format_task(result.task, catalog))
            else:
                print(f"{result.task_id:>6} ! {result.error}{_id_hint(result.error)}")
            for event in result.events:
                verb = "raised" if send else "would raise"
                print(f"{'':>6}   {verb}: {service.renderer.text([event])}")
        if send:
            undelivered = await service.dispatcher.drain(config.alerts.retry_max_s)
    finally:
        await service.stop()
    if undelivered:
        print(f"{undelivered} deliveries still pending in the outbox", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if unknown or any(r.error for r in results) else EXIT_OK


async def _task_id(poller: Poller, text: str) -> int | None:
    """Digits are an id (as ever); #418 or a task's link is a number, looked up."""
    if text.strip().isdigit():
        return int(text)
    ref = parse_task(text)
    if ref is None:
        return None
    return ref.value if ref.is_id else await poller.id_of_number(ref.value)


def _id_hint(error: PlanfixError | None) -> str:
    if getattr(error, "code", None) == "3001":
        return " (a task's number? write it as #N)"
    return ""


# --- demo and emulator -------------------------------------------------------------------

DEMO_QUOTA = 50000
DEMO_PAGE_PORT = 9464  # the status page's usual port; any free one when it is taken


def demo_config(
    emulator: Emulator,
    task_ids: Sequence[int],
    state_dir: Path,
    push_port: int = 0,
    page_port: int = 0,
    admin_token: str | None = None,
) -> Config:
    """The embedded defaults `make run` shows: poll fast, alert on everything;
    with ``push_port``, the emulator pushes each change there, as PlanFix's
    scenarios do."""
    settings = emulator.account.settings
    push: dict[str, object] = {}
    if push_port:
        push = {"listen": f"127.0.0.1:{push_port}", "secret": secrets.token_hex(16)}
        settings.push_url = f"http://127.0.0.1:{push_port}/planfix"
        settings.push_secret = str(push["secret"])
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
            "metrics": {
                "listen": f"127.0.0.1:{page_port}" if page_port else "",
                **({"admin_token": admin_token} if admin_token else {}),
            },
            "push": push,
        },
        source="(demo defaults)",
        environ={},
    )


async def _demo(seconds: float | None, pace: float) -> int:
    account = Account(Settings(daily_quota=DEMO_QUOTA))
    ids = build(account)
    with Emulator(account) as emulator, tempfile.TemporaryDirectory() as state_dir:
        token = secrets.token_hex(16)
        config = demo_config(emulator, ids, Path(state_dir), push_port=_free_port(),
                             page_port=DEMO_PAGE_PORT, admin_token=token)  # fmt: skip
        print(
            f"PlanFix emulator on {emulator.endpoint}: {len(ids)} tasks, changed every few "
            "seconds, each change pushed to the service as a PlanFix scenario would; one "
            "falls overdue at the next whole minute.",
            flush=True,
        )

        def announce(url: str) -> None:
            print(f"Status page: {url} (admin token for its actions: {token})\n"
                  "Watching… (Ctrl-C stops)", flush=True)  # fmt: skip

        scenario = Scenario(account, ids, pace=pace)
        scenario.start()
        try:
            return await _run(config, None, seconds, announce)
        finally:
            scenario.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _emulator(args: argparse.Namespace) -> int:
    account = Account(Settings(daily_quota=args.quota))
    populate(account, args.tasks, seed=args.seed)
    try:
        emulator = Emulator(account, host=args.host, port=args.port).start()
    except (OSError, OverflowError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"planfix-notifier: emulator on {args.host}:{args.port}: {why}", file=sys.stderr)
        return EXIT_USAGE
    print(emulator_intro(emulator), flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        emulator.stop()


def emulator_intro(emulator: Emulator, shown: int = 10) -> str:
    """What the emulator holds, and a config to point the service at it."""
    settings = emulator.account.settings
    tasks = sorted(emulator.account.tasks.values(), key=lambda t: int(t["id"]))
    lines = [
        f"PlanFix emulator on {emulator.endpoint}: account {settings.account!r}, "
        f"{len(tasks)} tasks, {settings.daily_quota} requests a day; control API at "
        f"{emulator.base_url}/control/state. Ctrl-C stops it.",
        "",
        f"{'id':>6}  {'number':>6}  title",
        *(f"{t['id']:>6}  {t.get('general', ''):>6}  {t.get('title', '')}" for t in tasks[:shown]),
    ]
    if len(tasks) > shown:
        lines.append(f"{'…':>6}  and {len(tasks) - shown} more")
    numbers = ", ".join(str(t["general"]) for t in tasks[:3] if t.get("general"))
    lines += [
        "",
        "A config for the service (save as notifier.toml; then planfix-notifier check):",
        "",
        "[planfix]",
        f'account = "{settings.account}"',
        f'endpoint = "{emulator.endpoint}"',
        f'api_key = "{settings.api_key}"',
        f'token = "{settings.token}"',
        f'timezone = "{settings.timezone}"',
        f"daily_quota = {settings.daily_quota}",
        "",
        "[watch]",
        f"numbers = [{numbers}]                 # as in the task's link; or tasks = [ids]",
        "",
        "[channels.console]",
        'type = "console"',
    ]
    return "\n".join(lines)
