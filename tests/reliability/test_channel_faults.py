"""Channel faults: Telegram and SMTP break while alerts are queued for both.

The real outbox sender (Dispatcher) drives the real Telegram and e-mail
channels against the fake Bot API and aiosmtpd, with one event stream routed
to both. Each fault is switched on, alerts are queued, the healthy channel must
deliver all of them while the fault lasts (no channel holds up another), then
the fault ends and:

- a passing fault: every alert arrives, in order, and nothing is a dead letter;
- a fault for good: those alerts are dead letters with the reason, the
  operator hook heard it, and alerts queued after the repair arrive.

Outages are minutes in production; here they are several retry rounds at a
back-off scaled down to fractions of a second.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from notifier.alerts.dispatcher import Dispatcher, DispatchSettings
from notifier.alerts.events import Event
from notifier.channels.base import Channel
from notifier.store import Store
from tests.alerts.samples import channel, event, summary
from tests.fakes.smtp import SmtpServer
from tests.fakes.telegram import FakeTelegram, TelegramServer
from tests.test_delivery import CHAT, until

ALERTS = 5


@dataclass
class Rig:
    """The two fakes, which a fault may stop and start again on the same port."""

    telegram: TelegramServer
    smtp: SmtpServer
    ca: trustme.CA
    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    async def failed(self, *failure: str) -> None:
        self.failures.append(failure)  # type: ignore[arg-type]

    def delivered(self, name: str) -> list[str]:
        """Titles as they arrived, in order."""
        if name == "team":
            return [line for text in self.telegram.fake.texts(CHAT) for line in _titles(text)]
        return [line for mail in self.smtp.inbox.messages for line in _titles(str(mail["Subject"]))]

    async def telegram_down(self) -> None:
        self.telegram.fake.down = True
        await asyncio.to_thread(self.telegram.__exit__)

    async def telegram_up(self) -> None:
        self.telegram = await asyncio.to_thread(self.telegram.restarted)

    async def smtp_down(self) -> None:
        await asyncio.to_thread(self.smtp.__exit__)

    async def smtp_up(self, ca: trustme.CA | None = None) -> None:
        """Up again; with another authority's certificate (``ca``) the client's TLS fails."""
        self.smtp = await asyncio.to_thread(self.smtp.restarted, ca or self.ca)


def _titles(text: str) -> list[str]:
    return re.findall(r"№\d+", text)


Step = Callable[[Rig], Awaitable[None]]


def _fake(kind: str, **options: float) -> Step:
    async def step(rig: Rig) -> None:
        rig.telegram.fake.inject(kind, CHAT, times=-1, **options)

    return step


async def _clear(rig: Rig) -> None:
    rig.telegram.fake.clear()


def _refuse(stage: str, code: int | None) -> Step:
    async def step(rig: Rig) -> None:
        setattr(rig.smtp.inbox, f"refuse_{stage}", code)

    return step


async def _untrusted_certificate(rig: Rig) -> None:
    await rig.smtp_down()
    await rig.smtp_up(trustme.CA())


async def _trusted_certificate(rig: Rig) -> None:
    await rig.smtp_down()
    await rig.smtp_up()


@dataclass(frozen=True)
class Fault:
    name: str
    broken: str  # the channel it breaks
    for_good: bool
    start: Step
    end: Step
    exactly_once: bool = True  # False where the server took a message the client gave up on


FAULTS = [
    Fault("telegram-429", "team", False, _fake("retry_after", retry_after=1), _clear),
    Fault("telegram-5xx", "team", False, _fake("server_error"), _clear),
    Fault("telegram-slow", "team", False, _fake("slow", delay_s=1.5), _clear, exactly_once=False),
    Fault("telegram-down", "team", False, Rig.telegram_down, Rig.telegram_up),
    Fault("telegram-403", "team", True, _fake("forbidden"), _clear),
    Fault("telegram-400", "team", True, _fake("bad_request"), _clear),
    Fault("smtp-down", "mail", False, Rig.smtp_down, Rig.smtp_up),
    Fault("smtp-4xx", "mail", False, _refuse("data", 451), _refuse("data", None)),
    Fault("smtp-5xx", "mail", True, _refuse("rcpt", 550), _refuse("rcpt", None)),
    Fault("smtp-tls", "mail", False, _untrusted_certificate, _trusted_certificate),
]


@pytest.fixture
async def rig(ca: tuple[trustme.CA, Path]) -> AsyncIterator[Rig]:
    made = Rig(
        TelegramServer(FakeTelegram()).__enter__(), SmtpServer("starttls", *ca).__enter__(), ca[0]
    )
    yield made
    await asyncio.to_thread(made.telegram.__exit__)
    if made.smtp.controller._thread is not None:  # still up
        await asyncio.to_thread(made.smtp.__exit__)


def _channels(rig: Rig) -> dict[str, Channel]:
    team = channel(
        "team",
        {
            "type": "telegram",
            "bot_token": rig.telegram.fake.token,
            "chat_ids": [CHAT],
            "api_url": rig.telegram.url,
            "per_chat_per_s": 50,
            "timeout_s": 1,
            "group": False,
        },
    )
    mail = channel("mail", rig.smtp.options(group=False, timeout_s=1))
    return {"team": team, "mail": mail}


def _alerts(first: int, count: int) -> list[Event]:
    return [
        event(task_id=2000 + n, task=summary(2000 + n, title=f"№{n}"))
        for n in range(first, first + count)
    ]


async def _queue(store: Store, dispatcher: Dispatcher, events: list[Event]) -> None:
    def route(ev: Event) -> list[tuple[str, str]]:
        return [(name, r) for name, c in dispatcher.channels.items() for r in c.recipients()]

    await store.add_events(events, [route(ev) for ev in events], queued_at=time.time())
    dispatcher.wake()


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
async def test_a_channel_fault_loses_nothing(fault: Fault, rig: Rig, tmp_path: Path) -> None:
    store = Store(tmp_path / "state.sqlite3")
    channels = _channels(rig)
    dispatcher = Dispatcher(
        store,
        channels,
        DispatchSettings(retry_base_s=0.2, retry_max_s=0.5),
        on_failed=rig.failed,
        on_result=lambda name, kind: rig.results.update([(name, kind)]),
        seed=7,
    )
    healthy = "mail" if fault.broken == "team" else "team"
    expected = [f"№{n}" for n in range(ALERTS)]
    dispatcher.start()
    try:
        await fault.start(rig)
        await _queue(store, dispatcher, _alerts(0, ALERTS))
        await until(lambda: rig.delivered(healthy) == expected, within=15)
        # it lasted: several retries, or every alert refused for good
        bad, lasted = ("dead", ALERTS) if fault.for_good else ("retry", 3)
        await until(lambda: rig.results[fault.broken, bad] >= lasted, within=15)
        assert rig.delivered(fault.broken) == [] or not fault.exactly_once
        await fault.end(rig)
        if fault.for_good:
            reasons = {reason for _, _, reason, _ in await store.dead_letters()}
            assert len(reasons) == 1 and all(f[2] in reasons for f in rig.failures)
            assert {f[0] for f in rig.failures} == {fault.broken}
            await _queue(store, dispatcher, _alerts(ALERTS, 2))  # after the repair
            expected_broken = ["№5", "№6"]
            expected += expected_broken
        else:
            expected_broken = expected
        await until(lambda: _arrived(rig.delivered(fault.broken), expected_broken), within=20)
        await until(lambda: rig.delivered(healthy) == expected, within=15)
        delivered = rig.delivered(fault.broken)
        if fault.exactly_once:
            assert delivered == expected_broken

        async def all_recorded() -> bool:
            return "pending" not in await store.outbox_counts()

        await until(all_recorded)  # marked sent, too
        counts = await store.outbox_counts()
        assert counts.get("dead", 0) == (ALERTS if fault.for_good else 0)
        if not fault.for_good:
            assert rig.failures == []
    finally:
        await dispatcher.stop()
        for made in channels.values():
            await made.aclose()
        await store.close()


def _arrived(delivered: list[str], expected: list[str]) -> bool:
    """All of ``expected`` arrived, first arrivals in order (a repeat is allowed)."""
    first = list(dict.fromkeys(delivered))
    return first == expected
