"""The quota ledger: counting, the day's reset, the server's word, pacing."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.planfix import PlanfixApiError, QuotaExhaustedError, RequestRecord
from notifier.store import Store
from notifier.watch.quota import QuotaLedger, day_bounds, reserve_now
from tests.watch.clock import FakeClock

MSK = ZoneInfo("Europe/Moscow")


def ledger(store: Store, clock: FakeClock, quota: int = 100, **kw: object) -> QuotaLedger:
    return QuotaLedger(
        store,
        daily_quota=quota,
        timezone="Europe/Moscow",
        clock=clock,
        sleep=clock.sleep,
        monotonic=clock,
        **kw,  # type: ignore[arg-type]
    )


async def spend(
    book: QuotaLedger, n: int, remaining: int | None = None, error: Exception | None = None
) -> None:
    for _ in range(n):
        await book.before_request("task.get")
        await book.after_request(RequestRecord("task.get", error, remaining, 0.01))  # type: ignore[arg-type]


async def restarted(store: Store, clock: FakeClock) -> QuotaLedger:
    """A ledger as a new process makes it: today's row read from the store."""
    book = ledger(store, clock)
    await book.load()
    return book


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state.sqlite3")


def test_day_ends_at_midnight_in_the_zone() -> None:
    now = datetime(2026, 11, 23, 23, 30, tzinfo=MSK).timestamp()
    day, ends = day_bounds(now, MSK)
    assert day.isoformat() == "2026-11-23"
    assert ends == datetime(2026, 11, 24, tzinfo=MSK).timestamp()


def test_reserve_is_released_through_the_day() -> None:
    assert reserve_now(5000, 0.05, 86400) == 250
    assert reserve_now(5000, 0.05, 43200) == 125
    assert reserve_now(5000, 0.05, 0) == 0


async def test_every_request_counts_and_survives_a_restart(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    book = ledger(store, clock)
    await spend(book, 3)
    await spend(book, 2, error=PlanfixApiError("0011"))  # failures count too
    assert book.today().used == 5
    again = await restarted(store, clock)
    assert again.today().used == 5 and again.remaining == 95


async def test_the_count_resets_at_midnight(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 23, 59, 30, tzinfo=MSK))
    book = ledger(store, clock)
    await spend(book, 10)
    clock.advance(60)
    assert book.remaining == 100 and book.today().day.isoformat() == "2026-11-24"


async def test_the_server_wins_when_it_says_less(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    book = ledger(store, clock)
    await spend(book, 1, remaining=40)  # another client of the account spent some
    assert book.remaining == 40
    await spend(book, 5)  # no header on these: counted down from the server's word
    assert book.remaining == 35
    await spend(book, 1, remaining=99)  # a higher word is not taken over our count
    assert book.remaining == 93


async def test_quota_error_pauses_until_the_reset_and_tells_once(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    told: list[float] = []
    book = ledger(store, clock, on_exhausted=told.append)
    await spend(book, 1, error=PlanfixApiError("0007"))
    await book.after_request(RequestRecord("task.get", PlanfixApiError("0007"), 0, 0.01))
    assert book.exhausted and book.remaining == 0 and book.plannable == 0
    assert told == [datetime(2026, 11, 24, tzinfo=MSK).timestamp()]
    with pytest.raises(QuotaExhaustedError):
        await book.before_request("task.get")
    assert (await restarted(store, clock)).exhausted  # survives a restart
    clock.advance(12 * 3600)
    assert not book.exhausted and book.remaining == 100


async def test_requests_are_paced(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    book = ledger(store, clock, requests_per_second=2.0)
    await spend(book, 3)
    assert clock.slept == [0.5, 0.5]


async def test_the_reserve_is_for_on_demand_polls(store: Store) -> None:
    clock = FakeClock(datetime(2026, 11, 23, 0, 0, 1, tzinfo=MSK))
    book = ledger(store, clock, quota=100, reserve_fraction=0.1)
    await spend(book, 90)
    assert book.plannable == 0 and book.remaining == 10
    with pytest.raises(QuotaExhaustedError, match="90/100"):
        await book.before_request("task.get")
    with book.on_demand():
        await spend(book, 10)
    with book.on_demand(), pytest.raises(QuotaExhaustedError):
        await book.before_request("task.get")


async def test_pacing_ignores_a_wall_clock_step(store: Store) -> None:
    """The gap between requests is kept on the monotonic clock: a wall clock
    stepped back 10 minutes used to hold the next request for those 10 minutes."""
    steady = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    wall = FakeClock(datetime(2026, 11, 23, 12, 0, tzinfo=MSK))
    book = QuotaLedger(
        store, daily_quota=100, timezone="Europe/Moscow", clock=wall, sleep=steady.sleep,
        monotonic=steady,
    )  # fmt: skip
    await spend(book, 1)
    wall.advance(-600)
    await spend(book, 1)
    assert steady.slept == [pytest.approx(1.0)]
    assert book.last_request_at == pytest.approx(wall())
    assert book.requests_last_hour() == 2


async def test_requests_are_counted_by_local_hour_and_kept(tmp_path: Path) -> None:
    """The status page's burn-down: each request in the hour it went, in the zone."""
    path = tmp_path / "state.sqlite3"
    clock = FakeClock(datetime(2026, 11, 23, 9, 59, 58, tzinfo=MSK))
    book = ledger(Store(path), clock)
    await spend(book, 2)  # 09:59:58 and, paced, 09:59:59
    await spend(book, 3)  # 10:00:00 …
    clock.advance(3 * 3600)
    await spend(book, 1)  # 13:00
    row = (await restarted(Store(path), clock)).today()  # as after a restart
    assert row.used == 6
    assert row.hours[9] == 2 and row.hours[10] == 3 and row.hours[13] == 1
    assert sum(row.hours) == row.used
