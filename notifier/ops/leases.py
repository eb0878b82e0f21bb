"""Leases: which instance does what, when several share one PostgreSQL state.

Every instance runs; a lease says which one polls an account (``poll:NAME``;
an instance takes at most its fair share of the accounts, counting the live
instances by their ``instance:…`` leases),
which one runs the Telegram bot (``bot``: Telegram allows one ``getUpdates``
reader per token) and which one sends to a recipient now (``lane:…``, so
two never send the same delivery, and one recipient's alerts stay in order).

A lease is a row taken or renewed in one statement (store.lease_take): it
is its holder's until ``expires``, ``lease_s`` after the holder last asked;
the polling's and the bot's are renewed every sixth of ``lease_s``, a
lane's every third while its pass lasts. An instance killed stops renewing;
another takes the lease once it has expired. An instance that cannot reach
the store stops using a lease two thirds of ``lease_s`` after it last
renewed it, before anyone may take it (so hosts' clocks must agree within a
third of ``lease_s``: NTP).

With SQLite there is one instance per state (its file lock): every lease
is its own, and nothing is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..store import Store, StoreError
from .clock import steady

BOT = "bot"


def poll_lease(account: str) -> str:
    return f"poll:{account}"


def fair_share(accounts: int, instances: int) -> int:
    """How many accounts one of ``instances`` live instances polls at most:
    every account is polled, and none is left to one instance while
    another has room."""
    return math.ceil(accounts / max(1, instances))


def instance_name() -> str:
    """This process, as other instances and the operator see it: its host,
    its PID, and a tag (in containers every PID is 1)."""
    return f"{socket.gethostname()} pid {os.getpid()} #{secrets.token_hex(4)}"


class Leases(Protocol):
    holder: str
    shared: bool  # other instances may hold leases: claims are real
    lease_s: float

    def holds(self, name: str) -> bool: ...

    async def take(self, name: str) -> bool:
        """Take it, or renew it when held; whether this instance holds it now."""
        ...

    async def renew(self, names: Sequence[str]) -> list[str]:
        """Renew these, held; those still held."""
        ...

    async def give_back(self, *names: str) -> None: ...


class OwnLeases:
    """SQLite: the only instance holds every lease."""

    shared = False
    lease_s = math.inf

    def __init__(self) -> None:
        self.holder = instance_name()

    def holds(self, name: str) -> bool:
        return True

    async def take(self, name: str) -> bool:
        return True

    async def renew(self, names: Sequence[str]) -> list[str]:
        return list(names)

    async def give_back(self, *names: str) -> None:
        return None


class SharedLeases:
    """Leases in the store, shared with the other instances."""

    shared = True

    def __init__(
        self,
        store: Store,
        lease_s: float,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = steady,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.clock = clock
        self.monotonic = monotonic
        self.holder = holder or instance_name()
        self._good_until: dict[str, float] = {}  # on the monotonic clock
        self.since: dict[str, float] = {}  # held since (wall time, as stored)

    def holds(self, name: str) -> bool:
        return self._good_until.get(name, -math.inf) > self.monotonic()

    async def take(self, name: str) -> bool:
        asked = self.monotonic()  # (its expiry counts from before the answer)
        try:
            since = await self.store.lease_take(name, self.holder, self.clock(), self.lease_s)
        except StoreError:
            return self.holds(name)  # kept until it is no longer safely ours
        if since is None:
            self._good_until.pop(name, None)
            self.since.pop(name, None)
            return False
        self._good_until[name] = asked + self.lease_s * 2 / 3
        self.since[name] = since
        return True

    async def renew(self, names: Sequence[str]) -> list[str]:
        if not names:
            return []
        asked = self.monotonic()
        try:
            renewed = await self.store.lease_renew(names, self.holder, self.clock(), self.lease_s)
        except StoreError:
            return [name for name in names if self.holds(name)]
        for name in names:
            if name in renewed:
                self._good_until[name] = asked + self.lease_s * 2 / 3
            else:
                self._good_until.pop(name, None)
        return renewed

    async def give_back(self, *names: str) -> None:
        if not names:
            return
        for name in names:
            self._good_until.pop(name, None)
            self.since.pop(name, None)
        with contextlib.suppress(StoreError):  # not given back: it expires
            await self.store.lease_give_back(names, self.holder)
