"""Configuration: one TOML file, environment overrides, secrets from files.

Looked up in order: ``--config PATH``, ``$PLANFIX_NOTIFIER_CONFIG``,
``./notifier.toml``, ``/etc/planfix-notifier/config.toml``. Unknown keys are
errors. A secret ``key`` may come as ``key_file`` (a path; relative paths are
read from ``$CREDENTIALS_DIRECTORY`` when systemd sets it) or from
``PLANFIX_NOTIFIER_<SECTION>_<KEY>``. Every error is one line naming the file,
the key path and what was expected.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import os
import re
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .alerts.events import ALL_EVENT_KINDS, TASK_EVENT_KINDS
from .channels.base import ChannelOptions, channel_kinds, channel_type
from .planfix.client import ClientSettings, check_endpoint, private_transport
from .planfix.errors import ConfigError as PlanfixConfigError

ENV_PREFIX = "PLANFIX_NOTIFIER_"
SEARCH_PATH = (Path("notifier.toml"), Path("/etc/planfix-notifier/config.toml"))
EVENT_KINDS = TASK_EVENT_KINDS
DEFAULT_EVENTS = ("status_changed", "became_overdue", "close_to_deadline", "task_unavailable")


class ConfigError(Exception):
    """A configuration that cannot work; its text is the one line to show."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanfixSection(_Section):
    account: str = Field(min_length=1)
    endpoint: str = "https://api.planfix.ru/xml/"
    api_key: SecretStr
    token: SecretStr | None = None
    login: str | None = None
    password: SecretStr | None = None
    signature_key: SecretStr | None = None
    timezone: str = "Europe/Moscow"
    daily_quota: int = Field(5000, ge=1)
    requests_per_second: float = Field(1.0, gt=0, le=100)
    timeout_s: float = Field(30.0, gt=0, le=600)

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        # "https://x.planfix.ru/" or "x.planfix.ru", copied from the browser: the name is x.
        host = value.strip().split("://", 1)[-1].split("/", 1)[0]
        if "." in host or "/" in value:
            name = host.split(".", 1)[0]
            raise ValueError(f'the account\'s name, not its address: use "{name}"')
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        try:
            check_endpoint(value)
        except PlanfixConfigError as exc:
            raise ValueError(exc.message.split(": ", 1)[-1]) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Moscow)") from None
        return value

    def client_settings(self) -> ClientSettings:
        def reveal(secret: SecretStr | None) -> str | None:
            return secret.get_secret_value() if secret else None

        return ClientSettings(
            account=self.account,
            endpoint=self.endpoint,
            api_key=self.api_key.get_secret_value(),
            token=reveal(self.token),
            login=self.login,
            password=reveal(self.password),
            signature_key=reveal(self.signature_key),
            timezone=self.timezone,
            timeout_s=self.timeout_s,
        )


class StateSection(_Section):
    path: Path = Path("state/notifier.sqlite3")  # SQLite, the embedded default
    # PostgreSQL instead (postgresql://user@host/db; or url_file, or the environment):
    url: SecretStr | None = None
    db_schema: str = Field(  # the PostgreSQL schema the tables go in, made on first use
        "planfix_notifier",
        alias="schema",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z_][a-z0-9_]*$",
    )
    pool_size: int = Field(4, ge=1, le=100)
    # Several instances on one PostgreSQL share the work by leases: one that
    # dies is taken over within this long (renewed every sixth of it).
    lease_s: float = Field(20.0, ge=3, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        url = value.get_secret_value()  # (never in a message: it may hold the password)
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("a postgresql://user@host/database address")
        if re.search(r"%(?![0-9A-Fa-f]{2})", url):
            raise ValueError("a % in the address must be written %25 (in a password too)")
        return value


class WatchSection(_Section):
    tasks: list[int] = Field(default_factory=list)  # API ids
    numbers: list[int] = Field(default_factory=list)  # task numbers, as in links (…/task/418)
    projects: list[int] = Field(default_factory=list)  # every task of these projects
    filters: list[int] = Field(default_factory=list)  # every task of these saved filters
    discover_interval_s: float = Field(600.0, ge=60)  # projects' and filters' members re-read
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    min_interval_s: float = Field(60.0, ge=1)
    deadline_window_s: float = Field(86400.0, ge=0)
    deadline_margin_s: float = Field(15.0, ge=0, le=3600)
    finished_interval_s: float = Field(6 * 3600.0, ge=60)
    unavailable_interval_s: float = Field(6 * 3600.0, ge=60)
    quota_reserve: float = Field(0.05, ge=0, le=0.5)
    feed_interval_s: float = Field(60.0, ge=0)  # ask what changed account-wide; 0 = never

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; known: {', '.join(EVENT_KINDS)}")
        return value


def parse_duration(value: str | float | int) -> float:
    """``90``, ``"90s"``, ``"15m"``, ``"4h"``, ``"1d"`` → seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise ValueError(f'a duration like "90s", "15m", "4h" or "1d", got {value!r}') from None


class AlertsSection(_Section):
    locale: str = Field("ru", pattern="^(ru|en)$")
    group_wait_s: float = Field(30.0, ge=0, le=3600)
    repeat_overdue_every: str | float | None = None  # "4h": remind while a task stays overdue
    urgent_importance: list[str] = Field(default_factory=lambda: ["HIGH"])
    urgent_events: list[str] = Field(default_factory=list)
    templates: Path | None = None  # a directory with ru/… and en/… templates to override
    task_url: str = "https://{account}.planfix.ru/task/{general}"
    retry_base_s: float = Field(10.0, gt=0)
    retry_max_s: float = Field(1800.0, gt=0)
    planfix_failing_after_s: float = Field(900.0, ge=0)  # tell the operator after this long
    shutdown_drain_s: float = Field(10.0, ge=0, le=300)  # on SIGTERM: deliver what is due

    @field_validator("repeat_overdue_every")
    @classmethod
    def _every(cls, value: str | float | None) -> str | float | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError("at least 60 seconds")
        return value

    @property
    def repeat_overdue_s(self) -> float | None:
        return parse_duration(self.repeat_overdue_every) if self.repeat_overdue_every else None


class AccountSection(PlanfixSection):
    """``[accounts.NAME]``: one more PlanFix account, with its own watch set."""

    watch: WatchSection = WatchSection()


# (in Telegram's buttons too; never a bare number, nor a word the bot's commands take)
ACCOUNT_NAME = re.compile(
    r"^(?!\d+$)(?!(?:all|project|проект)$)[A-Za-z0-9][A-Za-z0-9_-]{0,31}$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Account:
    """A PlanFix account the service watches.

    ``name`` is what people read and routes filter by: NAME of
    ``[accounts.NAME]``, or ``planfix.account`` for the ``[planfix]`` table.
    ``key`` keys its rows in the state: "" for ``[planfix]`` (its rows from
    before there were accounts), NAME otherwise."""

    key: str
    name: str
    planfix: PlanfixSection
    watch: WatchSection


class RouteSection(_Section):
    """Every matching route delivers; a filter left out matches everything."""

    accounts: list[str] | None = None  # names: NAME of [accounts.NAME], or planfix.account
    events: list[str] | None = None
    tasks: list[int] | None = None
    projects: list[int] | None = None
    importance: list[str] | None = None
    workers: list[int] | None = None
    channels: list[str] = Field(min_length=1)
    operator: bool = False  # this route carries the operator's alerts (and only those)


class BotSection(_Section):
    """The bot that takes commands: the same token as a Telegram channel."""

    channel: str = ""  # a [channels.NAME] of type "telegram"; "" = no bot
    allowed_chats: list[int] = Field(default_factory=list)  # chats that may subscribe
    admins: list[int] = Field(default_factory=list)  # Telegram user ids: anywhere, anything
    poll_timeout_s: float = Field(20.0, ge=0, le=60)  # long polling of getUpdates
    watch_per_hour: int = Field(30, ge=1)  # /watch per chat per hour (each reads PlanFix)
    max_subscriptions: int = Field(100, ge=1)  # tasks one chat may watch


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_address(value: str, example: str) -> str:
    port = value.rpartition(":")[2]
    if value and not (port.isdigit() and 0 <= int(port) <= 65535):
        raise ValueError(f'"host:port", the port 0 to 65535 (e.g. "{example}"), or "" for none')
    return value


class MetricsSection(_Section):
    listen: str = "127.0.0.1:9464"  # "" turns the endpoint off
    unhealthy_after_s: float = Field(1800.0, gt=0)  # /healthz: 503 without a good poll this long
    heartbeat_url: str = ""  # a GET after each healthy poll round, at most once a minute
    channel_stuck_after_s: float = Field(3600.0, gt=0)  # /healthz: 503 when due, undelivered
    # The status page at / and /status.txt (for `status`); unset: served on a
    # loopback listen only (it shows task titles and recipients).
    status_page: bool | None = None
    admin_token: SecretStr | None = None  # or admin_token_file: the page's actions need it
    hosts: list[str] = Field(default_factory=list)  # names the page answers to, besides IPs

    @property
    def page_on(self) -> bool:
        if self.status_page is not None:
            return self.status_page
        host = self.listen.rpartition(":")[0].strip("[]")
        return bool(self.listen) and (host in ("", "localhost") or _loopback(host))

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen_address(value, "127.0.0.1:9464")

    @field_validator("admin_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("at least 16 characters (e.g. the output of `openssl rand -hex 16`)")
        return value

    @field_validator("heartbeat_url")
    @classmethod
    def _heartbeat(cls, value: str) -> str:
        if value and not private_transport(value):
            raise ValueError("https:// (plain http:// only to a loopback host)")
        return value


class PushSection(_Section):
    """PlanFix's scenarios POST here when a task changes: a read follows at once."""

    listen: str = ""  # "host:port" facing PlanFix (behind TLS); "" = off
    path: str = "/planfix"
    secret: SecretStr | None = None  # or secret_file; required once listen is set
    header: str = "X-Notifier-Secret"
    min_interval_s: float = Field(30.0, ge=0)  # at most one read per task this often
    auto_watch: bool = False  # a pushed task in no watch set is watched from then on
    source_rate_per_s: float = Field(20.0, gt=0)  # pushes from one address, after the burst
    source_burst: int = Field(1000, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen_address(value, "0.0.0.0:9465")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('a path, starting with "/"')
        return value

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c == "-" for c in value):
            raise ValueError("an HTTP header name (letters, digits and -)")
        return value


class Config(_Section):
    planfix: PlanfixSection | None = None  # (one of it or [accounts.*] at least)
    accounts: dict[str, AccountSection] = Field(default_factory=dict)
    state: StateSection = StateSection()
    watch: WatchSection = WatchSection()
    alerts: AlertsSection = AlertsSection()
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict)
    routes: list[RouteSection] = Field(default_factory=list)
    bot: BotSection = BotSection()
    metrics: MetricsSection = MetricsSection()
    push: PushSection = PushSection()

    @property
    def watched_accounts(self) -> list[Account]:
        """Every account, ``[planfix]``'s first; then ``[accounts.*]`` in the file's order."""
        found = []
        if self.planfix is not None:
            found.append(Account("", self.planfix.account, self.planfix, self.watch))
        for name, section in self.accounts.items():
            found.append(Account(name, name, section, section.watch))
        return found

    @property
    def first(self) -> Account:
        """The account whose zone the service's own times are shown in."""
        return self.watched_accounts[0]

    def account_named(self, name: str | None) -> Account:
        """An account by its name (None: the first); ValueError naming the known ones."""
        accounts = self.watched_accounts
        for account in accounts:
            if name is None or account.name == name:
                return account
        known = ", ".join(a.name for a in accounts)
        raise ValueError(f"no account {name!r} (known: {known})")

    def push_path(self, name: str) -> str:
        """Where PlanFix pushes the tasks of the account named so."""
        return next(path for path, each in self.push_paths().items() if each == name)

    def push_paths(self) -> dict[str, str]:
        """Where PlanFix pushes each account's tasks → its name: ``push.path``
        for the first; with several, ``push.path/NAME`` for each (the first's too)."""
        paths = {self.push.path: self.first.name}
        if len(self.watched_accounts) > 1:
            base = self.push.path.rstrip("/")
            paths |= {f"{base}/{a.name}": a.name for a in self.watched_accounts}
        return paths

    def check_accounts(self) -> None:
        if self.planfix is None and not self.accounts:
            raise ValueError("planfix: required, missing (or one [accounts.NAME] at least)")
        if self.planfix is None and self.watch != WatchSection():
            raise ValueError(
                "watch: belongs to [planfix]; with [accounts.*] alone, use [accounts.NAME.watch]"
            )
        for name in self.accounts:
            if not ACCOUNT_NAME.match(name):
                raise ValueError(
                    f"accounts.{name}: a name of up to 32 letters, digits, _ and - "
                    "(it keys the state), not a number, nor all or project"
                )
        if (
            self.planfix is not None
            and self.accounts
            and not ACCOUNT_NAME.match(self.planfix.account)
        ):
            raise ValueError(
                "planfix.account: with [accounts.*] too it names its account: up to 32 "
                "letters, digits, _ and -"
            )
        seen: dict[tuple[str, str], str] = {}
        for account in self.watched_accounts:  # (one PlanFix account, one quota)
            where = (account.planfix.endpoint, account.planfix.account.lower())
            if where in seen and account.key:
                raise ValueError(
                    f"accounts.{account.key}: the same PlanFix account as {seen[where]} "
                    "(the same endpoint and account): it has one daily quota, watch it once"
                )
            seen[where] = f"accounts.{account.key}" if account.key else "[planfix]"
        if self.planfix is not None and self.planfix.account in self.accounts:
            raise ValueError(
                f"accounts.{self.planfix.account}: the name of [planfix]'s account too; "
                "accounts are told apart by name: give it another"
            )

    def channel_options(self) -> dict[str, ChannelOptions]:
        """Each ``[channels.NAME]`` checked by its own type's model."""
        found: dict[str, ChannelOptions] = {}
        for name, raw in self.channels.items():
            kind = raw.get("type")
            channel = channel_type(kind) if isinstance(kind, str) else None
            if channel is None:
                known = ", ".join(channel_kinds())
                raise ValueError(f"channels.{name}.type: {kind!r} is not a channel type ({known})")
            try:
                found[name] = channel.Options.model_validate(raw)
            except ValidationError as exc:
                within = channel.Options
                raise ValueError(_first_error(exc, f"channels.{name}", within)) from None
        return found

    def check_bot(self) -> None:
        name = self.bot.channel
        if name and self.channels.get(name, {}).get("type") != "telegram":
            raise ValueError(f"bot.channel: {name!r} is not a [channels.*] of type telegram")

    def check_routes(self) -> None:
        names = [account.name for account in self.watched_accounts]
        for index, route in enumerate(self.routes):
            ids = [k for k in ("tasks", "projects", "workers") if getattr(route, k) is not None]
            if len(names) > 1 and ids and route.accounts is None:
                raise ValueError(
                    f"routes[{index}].{ids[0]}: ids are an account's own; with several "
                    f"accounts, name the route's in routes[{index}].accounts"
                )
            for name in route.accounts or []:
                if name not in names:
                    raise ValueError(
                        f"routes[{index}].accounts: no account named {name!r} "
                        f"(known: {', '.join(names)})"
                    )
            for name in route.channels:
                if name not in self.channels:
                    raise ValueError(f"routes[{index}].channels: no channel named {name!r}")
            for event in route.events or []:
                if event not in ALL_EVENT_KINDS:
                    raise ValueError(f"routes[{index}].events: unknown event {event!r}")

    def secrets(self) -> list[str]:
        """Every secret value in the config, for the log redactor."""
        found = [
            getattr(account.planfix, key).get_secret_value()
            for account in self.watched_accounts
            for key in SECRET_KEYS["planfix"]
            if getattr(account.planfix, key) is not None
        ]
        for secret in (self.push.secret, self.metrics.admin_token, self.state.url):
            if secret is not None:
                found.append(secret.get_secret_value())
        if self.state.url is not None:
            from .store.postgres import url_password  # (the store imports this module's types)

            found += url_password(self.state.url.get_secret_value())
        for options in self.channel_options().values():
            for key in CHANNEL_SECRET_KEYS:
                value = getattr(options, key, None)
                if isinstance(value, SecretStr):
                    found.append(value.get_secret_value())
        return found

    def check_push(self) -> None:
        if self.push.listen and self.push.secret is None:
            raise ValueError(
                "push.secret: required when push.listen is set (PlanFix sends it in "
                f"{self.push.header}; anyone else is refused)"
            )
        if self.push.listen and self.push.listen == self.metrics.listen:
            raise ValueError("push.listen: the same address as metrics.listen; give it its own")

    def check_auth_mode(self) -> None:
        for account in self.watched_accounts:
            pf = account.planfix
            table = f"accounts.{account.key}" if account.key else "planfix"
            if pf.token is None and not (pf.login and pf.password):
                raise ValueError(f"set {table}.token, or {table}.login and {table}.password")


SECRET_KEYS = {
    "planfix": ("api_key", "token", "password", "signature_key"),
    "state": ("url",),  # it may hold the database's password
    "push": ("secret",),
    "metrics": ("admin_token",),
}
CHANNEL_SECRET_KEYS = ("bot_token", "password", "secret")


def find_config(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if from_env:
        return Path(from_env)
    for candidate in SEARCH_PATH:
        if candidate.exists():
            return candidate
    raise ConfigError(
        "no configuration: pass --config PATH, set PLANFIX_NOTIFIER_CONFIG, or create "
        "./notifier.toml (`planfix-notifier init` writes a commented one)"
    )


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(raw, source=str(path), environ=environ)


def config_from_dict(
    raw: dict[str, Any], *, source: str, environ: dict[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    try:
        data = _apply_env(copy.deepcopy(raw), env)  # (the caller's tables stay as they were)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _read_secret_files(data, source, env)
    try:
        config = Config.model_validate(data)
        config.check_accounts()
        config.check_auth_mode()
        config.check_routes()
        config.channel_options()
        config.check_bot()
        config.check_push()
    except ValidationError as exc:
        raise ConfigError(_one_line(source, exc)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _apply_env(data: dict[str, Any], env: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """``PLANFIX_NOTIFIER_PLANFIX_TOKEN=…`` sets ``planfix.token``;
    ``PLANFIX_NOTIFIER_CHANNELS_TEAM_BOT_TOKEN=…`` sets ``channels.team.bot_token``;
    ``PLANFIX_NOTIFIER_ACCOUNTS_CLIENT1_TOKEN=…`` sets ``accounts.client1.token``.
    A name's ``-`` is ``_`` there too (``accounts.client-2``: ``…_CLIENT_2_TOKEN``),
    as shells allow no ``-`` in a variable's name."""
    tables: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
        (section, data.setdefault(section, {}), keys)
        for section, keys in SECRET_KEYS.items()
        # ([planfix] made only when the file has it or the environment sets
        # one of its keys: a config of [accounts.*] alone has none)
        if section != "planfix" or "planfix" in data or _env_sets(env, "planfix", keys)
    ]
    for kind, keys in (("channels", CHANNEL_SECRET_KEYS), ("accounts", SECRET_KEYS["planfix"])):
        named = data.get(kind)
        if isinstance(named, dict):
            tables += [
                (f"{kind}_{name}", table, keys)
                for name, table in named.items()
                if isinstance(table, dict)
            ]
    setting: dict[str, str] = {}  # a variable set → the key it set
    for prefix, table, keys in tables:
        for key in keys:
            for name in (key, f"{key}_file"):
                where = f"{prefix.replace('_', '.', 1)}.{name}"
                given = {v: env[v] for v in _env_names(prefix, name) if env.get(v)}
                if len(set(given.values())) > 1:
                    raise ValueError(f"{' and '.join(given)} both set {where}, differently")
                for variable, value in given.items():
                    if setting.setdefault(variable, where) != where:
                        raise ValueError(
                            f"{variable} would set both {setting[variable]} and {where} "
                            "(their names differ only by case, or by - and _): rename one, "
                            "or give the secret by *_file"
                        )
                    table[name] = value
    return data


def _env_names(prefix: str, key: str) -> list[str]:
    """The variables that set a key: its name in capitals, and the same with
    ``-`` as ``_`` (the one a shell can set)."""
    exact = f"{ENV_PREFIX}{prefix}_{key}".upper()
    shell = exact.replace("-", "_")
    return [exact] if shell == exact else [exact, shell]


def _env_sets(env: os._Environ[str] | dict[str, str], prefix: str, keys: tuple[str, ...]) -> bool:
    return any(
        env.get(variable)
        for key in keys
        for end in ("", "_file")
        for variable in _env_names(prefix, f"{key}{end}")
    )


def _secret_places(data: dict[str, Any]) -> list[tuple[str, dict[str, Any], tuple[str, ...]]]:
    """(key path, the table, its secret keys): [planfix] and the other
    sections, every [channels.X] and every [accounts.X]."""
    places: list[tuple[str, dict[str, Any], tuple[str, ...]]] = []
    for section, keys in SECRET_KEYS.items():
        if isinstance(data.get(section), dict):
            places.append((section, data[section], keys))
    for kind, keys in (("channels", CHANNEL_SECRET_KEYS), ("accounts", SECRET_KEYS["planfix"])):
        named = data.get(kind)
        if isinstance(named, dict):
            for name, table in named.items():
                if isinstance(table, dict):
                    places.append((f"{kind}.{name}", table, keys))
    return places


def _read_secret_files(
    data: dict[str, Any], source: str, env: os._Environ[str] | dict[str, str]
) -> None:
    base = Path(source).parent
    for section, values, keys in _secret_places(data):
        for key in keys:
            file_key = f"{key}_file"
            if file_key not in values:
                if isinstance(values.get(key), str) and not values[key].strip():
                    raise ConfigError(f"{source}: {section}.{key}: empty (a secret cannot be)")
                continue
            places = _secret_places_for(Path(str(values.pop(file_key))), base, env)
            path = next((p for p in places if p.exists()), places[0])
            try:
                values[key] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                tried = f" (looked in {', '.join(map(str, places))})" if len(places) > 1 else ""
                if len(places) > 1 and not env.get("CREDENTIALS_DIRECTORY"):
                    tried += "; $CREDENTIALS_DIRECTORY is not set (systemd sets it for the service)"
                raise ConfigError(
                    f"{source}: {section}.{file_key}: cannot read {path}: {exc.strerror}{tried}"
                ) from None
            if not values[key]:
                raise ConfigError(f"{source}: {section}.{file_key}: {path} is empty")


# The systemd unit loads every file of /etc/planfix-notifier/credentials with one
# LoadCredential=secret:<that folder> line (so a config may use fewer secrets),
# which names each credential secret_<file>.
UNIT_CREDENTIAL_PREFIX = "secret_"
CREDENTIALS_FOLDER = "credentials"


def _secret_places_for(
    name: Path, base: Path, env: os._Environ[str] | dict[str, str]
) -> list[Path]:
    """Where a relative ``*_file`` name is looked for, in order: systemd's
    $CREDENTIALS_DIRECTORY (as named, or as the unit's folder-wide line names
    it), then beside the config, then in its credentials/ folder (the unit's
    layout, when ``check`` is run by hand)."""
    if name.is_absolute():
        return [name]
    places = []
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials:
        places += [Path(credentials) / name, Path(credentials) / f"{UNIT_CREDENTIAL_PREFIX}{name}"]
    return [*places, base / name, base / CREDENTIALS_FOLDER / name]


def _one_line(source: str, exc: ValidationError) -> str:
    return f"{source}: {_first_error(exc)}"


def _sections() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for name, field in Config.model_fields.items():
        annotation = field.annotation
        union = isinstance(annotation, types.UnionType)
        for kind in get_args(annotation) if union else (annotation,):  # (X | None: X)
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found[name] = kind
    return found


def _unknown_key_hint(loc: tuple[str | int, ...], within: type[BaseModel] | None = None) -> str:
    """For a key no section knows: the section it belongs in, or the key it is a typo of.
    ``within``: the model ``loc`` is in, when not the whole config (a channel's options)."""
    key = str(loc[-1])
    if within is not None:
        known = list(within.model_fields)
    elif len(loc) == 1:
        known = list(Config.model_fields)
        homes = [f"[{name}]" for name, model in _sections().items() if key in model.model_fields]
        if homes:
            return f" ({key} belongs in {' or '.join(homes)})"
    else:
        section = _sections().get(str(loc[0]))
        if section is None or len(loc) != 2:
            return ""
        known = list(section.model_fields)
        for name, other in _sections().items():
            if key in other.model_fields and key not in known:
                return f" ({key} belongs in [{name}], not [{loc[0]}])"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def _first_error(
    exc: ValidationError, prefix: str = "", within: type[BaseModel] | None = None
) -> str:
    """The first error in one line (a typo'd key first: its right name is then
    also "missing", which says nothing more), and the next one if any."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    said = _error_line(first, prefix, within)
    hint = said.rpartition("did you mean ")[2].rstrip("?)")
    rest = [
        e for e in errors
        if e is not first and not (e["type"] == "missing" and str(e["loc"][-1]) == hint)
    ]  # fmt: skip
    if rest:
        said += f"; also {_error_line(rest[0], prefix, within)}"
        said += f" (and {len(rest) - 1} more)" if len(rest) > 1 else ""
    return said


def _error_line(error: Any, prefix: str, within: type[BaseModel] | None) -> str:
    loc = tuple(error["loc"])
    where = ".".join([prefix, *map(str, loc)] if prefix else map(str, loc)) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        what = "unknown key" + (_unknown_key_hint(loc, within) or " (a typo?)")
    elif kind == "missing":
        what = "required, missing"
    else:
        what = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {what}"
