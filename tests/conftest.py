"""Shared fixtures: a real PlanFix emulator on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from notifier.emulator import Account, Emulator, EmulatorControl, Settings
from notifier.planfix import ClientSettings, PlanfixClient, RequestGate
from tests.fakes.smtp import SmtpServer
from tests.fakes.telegram import FakeTelegram, TelegramServer
from tests.fakes.webhook import WebhookServer

ClientFactory = Callable[..., PlanfixClient]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(Account(Settings())) as running:
        yield running


@pytest.fixture
def control(emulator: Emulator) -> Iterator[EmulatorControl]:
    remote = EmulatorControl(emulator.base_url)
    yield remote
    remote.close()


def client_settings(emulator: Emulator, **overrides: Any) -> ClientSettings:
    emu = emulator.account.settings
    values: dict[str, Any] = {
        "account": emu.account,
        "endpoint": emulator.endpoint,
        "api_key": emu.api_key,
        "token": emu.token,
        "timezone": emu.timezone,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return ClientSettings(**values)


@pytest.fixture
async def make_client(emulator: Emulator) -> AsyncIterator[ClientFactory]:
    """Build clients against the emulator; each is closed after the test."""
    made: list[PlanfixClient] = []

    def factory(gate: RequestGate | None = None, **overrides: Any) -> PlanfixClient:
        client = PlanfixClient(client_settings(emulator, **overrides), gate=gate)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> PlanfixClient:
    return make_client()


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer(FakeTelegram()) as server:
        yield server


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture(params=["none", "starttls", "tls"])
def smtp(request: pytest.FixtureRequest, ca: tuple[trustme.CA, Path]) -> Iterator[SmtpServer]:
    with SmtpServer(request.param, *ca) as server:
        yield server


@pytest.fixture
def smtp_plain(ca: tuple[trustme.CA, Path]) -> Iterator[SmtpServer]:
    with SmtpServer("none", *ca) as server:
        yield server


@pytest.fixture
def webhook() -> Iterator[WebhookServer]:
    with WebhookServer() as server:
        yield server
