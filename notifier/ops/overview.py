"""What the operator sees, gathered in one place for the status page and
``status``: the watched tasks with their plan, the
day's quota by hour, the outbox per channel, and health.

All of it comes from the store, which another process (``status``) can read
too; what only the running service knows (health, the next planned polls)
comes through :class:`Live`, and is absent when the service is not running.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from ..alerts.events import Event
from ..config import Account, Config
from ..store import ChannelBacklog, OutboxItem, Store
from ..watch.feed import FeedMode
from ..watch.poller import STATUS_NAMES
from ..watch.quota import LedgerDay, day_bounds

PAGE = 200  # task rows at a time

# The watch sets' sources in the store, as a person names them.
SOURCES = {"config": "tasks", "config:numbers": "numbers", "config:sets": "sets", "push": "push"}


class Live(Protocol):
    """What only the running service knows."""

    def health(self) -> tuple[bool, str]: ...

    def planned(
        self, task_ids: Sequence[int], account: str | None = None
    ) -> dict[int, tuple[float, str]]: ...


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: int
    number: int | None
    title: str
    status: str  # its name where the catalogue is known, else "#id"; "" before the baseline
    deadline: datetime | None  # in the account's zone
    deadline_has_time: bool
    last_poll_at: float | None
    last_result: str | None
    failures: int
    next_poll_at: float | None  # None: not known here (the service is not running)
    next_reason: str  # deadline | baseline | recheck | rotation | none
    last_change_at: float | None
    sets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QuotaView:
    day: date
    daily: int
    used: int
    on_demand: int
    hours: tuple[int, ...]  # requests per local hour, 0–23
    hour_now: int  # the hours so far are 0..hour_now
    resets_at: float
    exhausted: bool

    @property
    def left(self) -> int:
        return 0 if self.exhausted else max(0, self.daily - self.used)

    @property
    def even_per_hour(self) -> float:
        return self.daily / 24


@dataclass(frozen=True, slots=True)
class AccountLine:
    """One account at a glance, where the service watches several."""

    name: str
    watched: int
    quota: QuotaView
    polled_by: str  # the instance holding its lease (PostgreSQL); "" on SQLite


@dataclass(frozen=True, slots=True)
class Overview:
    at: float
    tz: str
    running: bool
    healthy: bool | None  # None: not known here
    why: str
    account: str  # the account the quota, feed, push and tasks below are of
    accounts: tuple[AccountLine, ...]  # every account, where there are several
    quota: QuotaView
    feed: str
    push: str
    leases: tuple[str, ...]  # which instance does what (PostgreSQL), as lines
    tasks: tuple[TaskRow, ...]
    total_tasks: int
    offset: int
    channels: tuple[ChannelBacklog, ...]
    pending: tuple[OutboxItem, ...]
    dead: tuple[OutboxItem, ...]
    recent: tuple[tuple[int, Event, list[tuple[str, str]]], ...]

    def local(self, ts: float | None, fmt: str = "%d.%m %H:%M") -> str:
        """A moment in the account's zone (the zone's label is shown once, in the header)."""
        return local(ts, self.tz, fmt)


async def gather(
    store: Store,
    config: Config,
    now: float,
    live: Live | None = None,
    *,
    account: str | None = None,
    offset: int = 0,
    limit: int = PAGE,
    outbox_limit: int = 50,
) -> Overview:
    """The overview, its tasks and quota those of ``account`` (a name; None:
    the first). ValueError for an account the config has not."""
    chosen = config.account_named(account)
    own = store.for_account(chosen.key)
    ids = await own.watched_ids()
    page = ids[offset : offset + limit]
    healthy, why = live.health() if live is not None else (None, "")
    return Overview(
        at=now,
        tz=config.first.planfix.timezone,
        running=live is not None,
        healthy=healthy,
        why=why,
        account=chosen.name,
        accounts=tuple(await account_lines(store, config, now)),
        quota=await quota_view(own, chosen, now),
        feed=await feed_line(own, chosen),
        push=await push_line(own, config, chosen),
        leases=tuple(await lease_lines(store, config, now)),
        tasks=tuple(await task_rows(own, page, live, chosen.name)),
        total_tasks=len(ids),
        offset=offset,
        channels=tuple(await store.outbox_by_channel()),
        pending=tuple(await store.outbox_items("pending", outbox_limit)),
        dead=tuple(await store.outbox_items("dead", outbox_limit)),
        recent=tuple(await store.recent_events(20)),
    )


async def account_lines(store: Store, config: Config, now: float) -> list[AccountLine]:
    accounts = config.watched_accounts
    if len(accounts) == 1:
        return []
    holders = {name: holder for name, holder, _, expires in await store.leases("poll:")
               if expires >= now}  # fmt: skip
    lines = []
    for account in accounts:
        own = store.for_account(account.key)
        lines.append(
            AccountLine(
                name=account.name,
                watched=await own.watched_count(),
                quota=await quota_view(own, account, now),
                polled_by=holders.get(f"poll:{account.name}", "none now")
                if config.state.url is not None
                else "",
            )
        )
    return lines


async def quota_view(store: Store, account: Account, now: float) -> QuotaView:
    """``store``: the account's own."""
    zone = ZoneInfo(account.planfix.timezone)
    day, resets = day_bounds(now, zone)
    row = await store.load_quota(day) or LedgerDay(day)
    return QuotaView(
        day=day,
        daily=account.planfix.daily_quota,
        used=row.used,
        on_demand=row.on_demand,
        hours=tuple(row.hours),
        hour_now=datetime.fromtimestamp(now, zone).hour,
        resets_at=resets,
        exhausted=row.exhausted,
    )


async def task_rows(
    store: Store, task_ids: Sequence[int], live: Live | None, account: str | None = None
) -> list[TaskRow]:
    records = await store.load_records(task_ids)
    cards = await store.load_cards(task_ids)
    planned = live.planned(task_ids, account) if live is not None else {}
    changes = await store.last_changes(task_ids)
    sources = await store.watch_sources(task_ids)
    names: dict[str, str] = json.loads(await store.get_meta(STATUS_NAMES) or "{}")
    rows = []
    for task_id in task_ids:
        record = records[task_id]
        card = cards.get(task_id)
        when, why = planned.get(task_id, (None, ""))
        status = ""
        if card is not None and card.status is not None:
            status = names.get(f"{card.status_set}:{card.status}") or f"#{card.status}"
        rows.append(
            TaskRow(
                task_id=task_id,
                number=card.general if card else None,
                title=card.title if card else "",
                status=status,
                deadline=card.end_time if card else None,
                deadline_has_time=card.end_time_has_time if card else True,
                last_poll_at=record.last_poll_at,
                last_result=record.last_result,
                failures=record.failures,
                next_poll_at=when,
                next_reason=why,
                last_change_at=changes.get(task_id),
                sets=tuple(SOURCES.get(s, s.replace(":", " ")) for s in sources.get(task_id, [])),
            )
        )
    return rows


async def feed_line(store: Store, account: Account) -> str:
    if not account.watch.feed_interval_s:
        return "change feed: off (watch.feed_interval_s = 0); every task on its own plan"
    mode = await store.get_meta("feed.mode") or FeedMode.CARDS.value
    if mode == FeedMode.NONE.value:
        return (
            "change feed: none — this PlanFix offers neither task.getList filters nor the "
            "action log; every task on its own plan"
        )
    cursor = await store.get_meta("feed.cursor")
    last = local(float(cursor), account.planfix.timezone) if cursor else "not yet"
    return f"change feed: {mode}, every {account.watch.feed_interval_s:.0f} s; last look {last}"


async def push_line(store: Store, config: Config, account: Account | None = None) -> str:
    """``store``: the account's own."""
    account = account or config.first
    if not config.push.listen:
        return "push: off (push.listen is empty)"
    path = config.push_path(account.name)
    raw = await store.get_meta("push.stats")
    if raw is None:
        return f"push: on at {config.push.listen}{path}; none received yet"
    stats = json.loads(raw)
    last_at = stats.get("last_at")
    last = local(last_at, account.planfix.timezone) if last_at else "never"
    line = (
        f"push: on at {config.push.listen}{path}; since start {stats['received']} "
        f"received, {stats['read']} tasks read, {stats['ignored']} in no watch set; last {last}"
    )
    if stats.get("waiting_for_planner"):
        line += (
            f"; {stats['waiting_for_planner']} pushed tasks wait for the planner "
            "(the on-demand reserve is spent for today)"
        )
    return line


async def lease_lines(store: Store, config: Config, now: float) -> list[str]:
    """Which instance polls, runs the bot, and sends to how many recipients
    now, and since when; none on SQLite (one instance does it all)."""
    if config.state.url is None:
        return []
    tz = config.first.planfix.timezone
    lines = [f"instances (leases of {config.state.lease_s:.0f} s):"]
    sending: dict[str, int] = {}
    for name, holder, since, expires in await store.leases():
        if name.startswith("lane:"):
            if expires >= now:  # (a dead instance's, not yet taken: not sending)
                sending[holder] = sending.get(holder, 0) + 1
            continue
        if name.startswith("instance:"):  # (each one's presence: the accounts are shared by)
            if expires >= now:
                lines.append(f"  instance {holder}: up since {local(since, tz)}")
            continue
        gone = f"; expired {local(expires, tz)}, to be taken over" if expires < now else ""
        lines.append(f"  {name}: {holder}, since {local(since, tz)}{gone}")
    if not any(line.startswith("  poll:") for line in lines):
        lines.append("  none holds the polling now: no instance runs")
    lines += [f"  sending to {n} recipient(s) now: {holder}" for holder, n in sending.items()]
    return lines


def local(ts: float | None, tz: str, fmt: str = "%d.%m %H:%M %Z") -> str:
    """A moment as a person reads it, in the account's zone: "30.11 14:05 MSK"."""
    if ts is None or not math.isfinite(ts):
        return "—"
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).strftime(fmt)
