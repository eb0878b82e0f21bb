"""The watch engine end to end: the service's poller against the emulator over
HTTP, with one injected clock for both sides."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from notifier.alerts.events import TASK_EVENT_KINDS, Event, EventKind
from notifier.app import Service
from notifier.config import config_from_dict
from notifier.emulator import Emulator, EmulatorControl
from notifier.planfix.errors import PlanfixApiError
from notifier.planfix.model import Task
from tests.watch.clock import FakeClock

MSK = ZoneInfo("Europe/Moscow")
START = datetime(2026, 11, 23, 12, 0, tzinfo=MSK)


class Harness:
    def __init__(
        self, emulator: Emulator, control: EmulatorControl, state: Path | dict[str, str]
    ) -> None:
        """``state``: the SQLite file, or a ``[state]`` table (PostgreSQL's)."""
        self.emulator, self.control, self.state = emulator, control, state
        self.clock = FakeClock(START)
        control.set_clock(START.isoformat(), freeze=True)
        self.events: list[Event] = []
        self.services: list[Service] = []

    async def service(
        self,
        tasks: Sequence[int],
        alerts: dict[str, Any] | None = None,
        watch: dict[str, Any] | None = None,
        push: dict[str, Any] | None = None,
        **planfix: Any,
    ) -> Service:
        settings = self.emulator.account.settings
        config = config_from_dict(
            {
                "planfix": {
                    "account": settings.account,
                    "endpoint": self.emulator.endpoint,
                    "api_key": settings.api_key,
                    "token": settings.token,
                    "daily_quota": settings.daily_quota,
                    **planfix,
                },
                "state": self.state if isinstance(self.state, dict) else {"path": str(self.state)},
                "watch": {"tasks": list(tasks), "events": list(TASK_EVENT_KINDS), **(watch or {})},
                "alerts": alerts or {},
                "push": push or {},
            },
            source="test",
            environ={},
        )
        made = Service(config, clock=self.clock, sleep=self.clock.sleep, monotonic=self.clock)
        made.poller.on_events = self.collect
        self.services.append(made)
        await made.load()
        return made

    def collect(self, stored: Sequence[tuple[int, Event]]) -> None:
        self.events.extend(event for _, event in stored)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.control.set_clock(datetime.fromtimestamp(self.clock.now, MSK).isoformat(), freeze=True)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]

    async def settle(self, service: Service, seconds: float = 120) -> None:
        """Let ``seconds`` of service time pass, polling whatever falls due."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            wake = await service.poller.tick()
            self.advance(max(0.5, min(wake, end) - self.clock.now))


@pytest.fixture
async def harness(
    emulator: Emulator, control: EmulatorControl, tmp_path: Path
) -> AsyncIterator[Harness]:
    made = Harness(emulator, control, tmp_path / "state.sqlite3")
    yield made
    for service in made.services:
        await service.stop()


def count(control: EmulatorControl) -> Callable[[str], int]:
    return lambda method: int(control.state()["requests"].get(method, 0))


async def test_a_status_change_raises_exactly_one_event(harness: Harness) -> None:
    task = harness.control.create_task(title="Отчёт", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service)
    assert harness.events == []  # the first sight is a baseline
    harness.control.change_task(task["id"], status=2)
    await harness.settle(service, 600)
    assert harness.kinds() == ["status_changed"]
    event = harness.events[0]
    assert (event.old, event.new) == ("Новая", "В работе")
    assert event.task is not None and event.task.title == "Отчёт"


async def test_restart_repeats_nothing_and_finds_what_changed_while_down(harness: Harness) -> None:
    task = harness.control.create_task(title="Договор", status=2)
    first = await harness.service([task["id"]])
    await harness.settle(first)
    harness.control.change_task(task["id"], status=3)
    await harness.settle(first, 600)
    assert harness.kinds() == ["status_changed"]
    await first.stop()

    harness.control.change_task(task["id"], title="Договор подписан")  # while down
    harness.advance(3600)
    second = await harness.service([task["id"]])
    await harness.settle(second, 600)
    assert harness.kinds() == ["status_changed", "title_changed"]
    await harness.settle(second, 3600)
    assert harness.kinds() == ["status_changed", "title_changed"]


async def test_a_change_found_after_three_days_down_is_still_delivered(harness: Harness) -> None:
    task = harness.control.create_task(title="После простоя", status=2)
    first = await harness.service([task["id"]])
    await harness.settle(first)
    await first.stop()
    harness.control.change_task(task["id"], status=3)  # the day the service went down
    harness.advance(3 * 86400)  # longer than a channel's max_age_s (two days)
    second = await harness.service([task["id"]])
    await harness.settle(second, 600)
    assert harness.kinds() == ["status_changed"]
    await second.dispatcher.flush("console")
    assert await second.store.outbox_counts() == {"sent": 1}


async def test_the_servers_remaining_count_is_a_cap_till_its_next_probe(harness: Harness) -> None:
    harness.control.configure(daily_quota=8)
    task = harness.control.create_task(title="Квота", status=2)
    service = await harness.service(
        [task["id"]], daily_quota=100
    )  # the config thinks there is more
    await harness.settle(service, 11.99 * 3600)  # to just before midnight
    state = harness.control.state()
    # Spread over the day; the header's count is a cap until its next probe
    # (PlanFix refreshes it only every ~10 minutes), and a probe PlanFix
    # refuses with 0007 ends the day: at most one request beyond the limit.
    assert state["quota"]["used"] <= 8
    assert sum(state["requests"].values()) <= 9
    assert set(harness.kinds()) <= {"quota_exhausted"} and len(harness.kinds()) <= 1


async def test_quota_exhausted_pauses_until_the_reset(harness: Harness) -> None:
    harness.control.configure(daily_quota=8, send_remaining=False)
    task = harness.control.create_task(title="Квота", status=2)
    harness.control.set_quota_used(0)
    service = await harness.service(
        [task["id"]], daily_quota=100
    )  # the config thinks there is more
    await harness.settle(service, 3 * 3600)
    assert harness.kinds() == ["quota_exhausted"]
    decision = service.poller.decide()
    assert decision.reason == "budget"
    midnight = datetime(2026, 11, 24, tzinfo=MSK).timestamp()
    assert decision.wake_at == midnight
    spent = sum(harness.control.state()["requests"].values())
    harness.control.change_task(task["id"], status=3)
    await harness.settle(service, 600)
    assert sum(harness.control.state()["requests"].values()) == spent  # paused: nothing sent
    harness.advance(midnight - harness.clock.now + 1)
    await harness.settle(service, 600)
    assert harness.kinds() == ["quota_exhausted", "quota_restored", "status_changed"]
    assert harness.events[0].details["resets_at_local"] == "24.11 00:00"


async def test_session_expiry_mid_run_is_transparent(harness: Harness) -> None:
    task = harness.control.create_task(title="Сессия", status=2)
    service = await harness.service(
        [task["id"]], token=None, login="robot", password="robot-password"
    )
    await harness.settle(service)
    harness.control.expire_sessions()
    harness.control.change_task(task["id"], status=3)
    await harness.settle(service, 600)
    assert harness.kinds() == ["status_changed"]
    assert count(harness.control)("auth.login") == 2


async def test_a_deleted_task_is_told_once_and_its_return_too(harness: Harness) -> None:
    kept = harness.control.create_task(title="Остаётся", status=2)
    gone = harness.control.create_task(title="Будет удалена", status=2)
    service = await harness.service([kept["id"], gone["id"]])
    await harness.settle(service)
    harness.control.delete_task(gone["id"])
    await harness.settle(service, 8 * 3600)  # several slow re-checks
    assert harness.kinds() == ["task_unavailable"]
    assert harness.events[0].task is not None and harness.events[0].task.title == "Будет удалена"
    harness.control.create_task(**{**gone, "status": 3})
    await harness.settle(service, 7 * 3600)
    assert harness.kinds() == ["task_unavailable", "task_available_again", "status_changed"]


async def test_a_garbled_answer_changes_nothing(harness: Harness) -> None:
    task = harness.control.create_task(title="Мусор", status=2)
    service = await harness.service([task["id"]])
    await harness.settle(service)
    for kind in ("malformed", "html", "xml_bomb", "huge"):
        harness.control.inject(kind, times=1)
    harness.control.inject("error", code="0011", times=1)
    await harness.settle(service, 3600)
    assert [e for e in harness.events if not e.kind.operator] == []
    record = service.poller.records[task["id"]]
    assert record.card is not None and record.card.status == 2


async def test_overdue_is_caught_right_after_the_deadline(harness: Harness) -> None:
    deadline = START + timedelta(hours=3)
    task = harness.control.create_task(
        title="Срок", status=2, endTime=deadline.strftime("%d-%m-%Y %H:%M")
    )
    other = [harness.control.create_task(title=f"Фон {i}", status=2)["id"] for i in range(30)]
    service = await harness.service([task["id"], *other])
    await harness.settle(service, 4 * 3600)
    overdue = [e for e in harness.events if e.kind is EventKind.BECAME_OVERDUE]
    assert len(overdue) == 1
    assert 0 <= overdue[0].at.timestamp() - deadline.timestamp() <= 120
    # The dashboard's detection delay: the deadline to the event, as the service records it.
    service._events_stored([(1, overdue[0])])  # (the harness collects the events itself)
    sample = service.metrics.registry.get_sample_value
    labels = {"kind": "became_overdue"}
    assert sample("planfix_notifier_detection_delay_seconds_count", labels) == 1
    assert sample("planfix_notifier_detection_delay_seconds_sum", labels) == pytest.approx(
        overdue[0].at.timestamp() - deadline.timestamp()
    )


async def test_planfix_failing_is_told_once_and_its_end(harness: Harness) -> None:
    task = harness.control.create_task(title="Сбой", status=2)
    service = await harness.service([task["id"]])
    await harness.settle(service)
    harness.control.inject("http_error", status=503, times=-1)
    await harness.settle(service, 3600)
    assert harness.kinds() == ["planfix_failing"]
    harness.control.clear_faults()
    await harness.settle(service, 3600)
    assert harness.kinds() == ["planfix_failing", "planfix_recovered"]


async def test_overdue_reminders_repeat_until_resolved(harness: Harness) -> None:
    deadline = START + timedelta(minutes=10)
    task = harness.control.create_task(
        title="Напомнить", status=2, endTime=deadline.strftime("%d-%m-%Y %H:%M")
    )
    service = await harness.service([task["id"]], alerts={"repeat_overdue_every": "1h"})
    await harness.settle(service, 3 * 3600 + 1200)
    overdue = [e for e in harness.events if e.kind is EventKind.BECAME_OVERDUE]
    assert [bool(e.details.get("reminder")) for e in overdue] == [False, True, True, True]
    gaps = [b.at.timestamp() - a.at.timestamp() for a, b in pairwise(overdue)]
    assert all(3600 <= gap <= 3600 + 600 for gap in gaps)
    harness.control.change_task(task["id"], status=3)
    await harness.settle(service, 3 * 3600)
    kinds = [e.kind for e in harness.events]
    assert kinds[-2:] == [EventKind.STATUS_CHANGED, EventKind.OVERDUE_RESOLVED]
    assert kinds.count(EventKind.BECAME_OVERDUE) == 4  # no reminder once resolved


async def test_the_planned_polls_the_operator_sees_match_the_polls_made(harness: Harness) -> None:
    """The status page's "next poll": for a task whose deadline comes first,
    that moment; for the rest, a turn of the rotation, which then comes."""
    deadline = START + timedelta(minutes=20)
    soon = harness.control.create_task(
        title="Скоро срок", status=2, endTime=deadline.strftime("%d-%m-%Y %H:%M")
    )
    others = [harness.control.create_task(title=f"Фон {i}", status=2)["id"] for i in range(20)]
    service = await harness.service([soon["id"], *others], daily_quota=50)  # a request per 29 min
    await harness.settle(service, 120)  # baselines
    now = harness.clock.now
    planned = service.poller.planned([soon["id"], *others])
    at, why = planned[soon["id"]]
    margin = service.poller.settings.deadline_margin_s
    assert why == "deadline" and at == deadline.timestamp() + margin
    turns = [planned[task_id] for task_id in others]
    assert {why for _, why in turns} == {"rotation"}
    first = min(at for at, _ in turns)
    assert now + 20 * 60 < first < now + 3 * 3600  # the next request's turn: half an hour or so
    polled_before = {t: service.poller.records[t].last_poll_at for t in others}
    await harness.settle(service, first - now + 120)
    repolled = [t for t in others if service.poller.records[t].last_poll_at != polled_before[t]]
    assert repolled, "the rotation's turn came and went without a poll"


async def test_an_answer_older_than_the_card_stored_meanwhile_is_dropped(harness: Harness) -> None:
    """A poll's request is out; the bot's /watch stores a newer card; then
    the poll's (older) answer lands: it must neither undo the change nor
    alert it back and forth."""
    task = harness.control.create_task(title="Гонка", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 120)
    old = await service.client.get_task(task["id"])  # the poll's answer, read first
    started = harness.clock.now
    harness.advance(5)
    harness.control.change_task(task["id"], status=2)
    await service.poller.ingest(await service.client.get_task(task["id"]))  # /watch meanwhile
    await service.poller._take({task["id"]: old}, started)  # the poll's answer lands
    assert [(e.kind, e.new) for e in harness.events] == [(EventKind.STATUS_CHANGED, "В работе")]
    stored = await service.store.load_card(task["id"])
    assert stored is not None and stored.status == 2


async def test_a_takeovers_reload_never_shows_an_empty_watch_set(harness: Harness) -> None:
    """Another instance polled until now: the records are read again. A
    reader meanwhile (the bot, the status page) sees the old set or the new,
    never none (seen in CI: the task vanished while the store answered)."""
    task = harness.control.create_task(title="Перечитать", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 120)
    store, seen = service.poller.store, []
    ask_ids, load = store.watched_ids, store.load_records

    def look() -> None:  # a reader while the store answers
        seen.append({i: r.card is not None for i, r in service.poller.records.items()})

    async def watched_ids(source: str | None = None) -> Any:
        look()
        return await ask_ids(source)

    async def load_records(ids: Iterable[int]) -> Any:
        look()
        return await load(ids)

    store.watched_ids = watched_ids  # type: ignore[method-assign]
    store.load_records = load_records  # type: ignore[method-assign,assignment]
    await service.poller.reload_all()
    assert seen == [{task["id"]: True}] * 2
    assert service.poller.records[task["id"]].card is not None  # read back, not forgotten


async def test_a_task_watched_again_gets_a_baseline_not_a_diff_with_its_old_card(
    harness: Harness,
) -> None:
    task = harness.control.create_task(title="Снова", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 120)
    await service.store.set_watched("config", [], harness.clock.now)  # no longer watched
    await service.poller.reload_watch_set()
    harness.control.change_task(task["id"], status=2)
    harness.advance(86400)
    await service.store.add_watched(task["id"], "chat:1", harness.clock.now)  # /watch again
    await service.poller.reload_watch_set()
    service.poller.forget(task["id"])  # as the bot does for a task new to the set
    assert await service.poller.ingest(await service.client.get_task(task["id"])) == []


async def test_a_fresh_baseline_that_fails_leaves_no_stale_card_behind(harness: Harness) -> None:
    """A task back in a watch set starts afresh; if its first read fails, the
    card from its earlier watch must not come back after a restart as the
    baseline (a false alert then)."""
    task = harness.control.create_task(title="Заново", status=1)
    service = await harness.service([task["id"]])
    await harness.settle(service, 120)
    service.poller.forget(task["id"])
    await service.poller._take({task["id"]: PlanfixApiError("3014")}, harness.clock.now)
    await service.stop()
    harness.control.change_task(task["id"], status=2)
    again = await harness.service([task["id"]])
    assert again.poller.records[task["id"]].card is None
    assert await again.poller.ingest(await again.client.get_task(task["id"])) == []


async def test_an_unchanged_card_costs_no_store_read_and_keeps_no_text(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = [harness.control.create_task(title=f"Тихо {i}", status=1)["id"] for i in range(3)]
    service = await harness.service(tasks)
    await harness.settle(service, 120)
    reads: list[int] = []
    load = service.store.load_card

    async def counted(task_id: int) -> Task | None:
        reads.append(task_id)
        return await load(task_id)

    monkeypatch.setattr(service.store, "load_card", counted)
    await service.poller.poll(tasks)
    assert reads == []  # the digests matched: nothing to unpack
    harness.control.change_task(tasks[0], status=2)
    await service.poller.poll(tasks)
    assert reads == [tasks[0]]  # only the changed card is read, to diff it
    assert all(r.card is not None and r.card.text is None for r in service.poller.records.values())
