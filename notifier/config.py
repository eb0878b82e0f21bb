"""Configuration: one TOML file, environment overrides, secrets from files.

Looked up in order: ``--config PATH``, ``$PLANFIX_NOTIFIER_CONFIG``,
``./notifier.toml``, ``/etc/planfix-notifier/config.toml``. Unknown keys are
errors. A secret ``key`` may come as ``key_file`` (a path; relative paths are
read from ``$CREDENTIALS_DIRECTORY`` when systemd sets it) or from
``PLANFIX_NOTIFIER_<SECTION>_<KEY>``. Every error is one line naming the file,
the key path and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .alerts.events import TASK_EVENT_KINDS
from .planfix.client import ClientSettings, check_endpoint
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
    path: Path = Path("state/notifier.sqlite3")


class WatchSection(_Section):
    tasks: list[int] = Field(default_factory=list)
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    min_interval_s: float = Field(60.0, ge=1)
    deadline_window_s: float = Field(86400.0, ge=0)
    deadline_margin_s: float = Field(15.0, ge=0, le=3600)
    finished_interval_s: float = Field(6 * 3600.0, ge=60)
    unavailable_interval_s: float = Field(6 * 3600.0, ge=60)
    quota_reserve: float = Field(0.05, ge=0, le=0.5)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; known: {', '.join(EVENT_KINDS)}")
        return value


class Config(_Section):
    planfix: PlanfixSection
    state: StateSection = StateSection()
    watch: WatchSection = WatchSection()

    def check_auth_mode(self) -> None:
        pf = self.planfix
        if pf.token is None and not (pf.login and pf.password):
            raise ValueError("set planfix.token, or planfix.login and planfix.password")


SECRET_KEYS = {"planfix": ("api_key", "token", "password", "signature_key")}


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
        "./notifier.toml (see config/notifier.example.toml)"
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
    data = _apply_env({k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}, env)
    _read_secret_files(data, source, env)
    try:
        config = Config.model_validate(data)
        config.check_auth_mode()
    except ValidationError as exc:
        raise ConfigError(_one_line(source, exc)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _apply_env(data: dict[str, Any], env: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """``PLANFIX_NOTIFIER_PLANFIX_TOKEN=…`` sets ``planfix.token``."""
    for section, keys in SECRET_KEYS.items():
        for key in keys:
            for name in (key, f"{key}_file"):
                value = env.get(f"{ENV_PREFIX}{section}_{name}".upper())
                if value:
                    data.setdefault(section, {})[name] = value
    return data


def _read_secret_files(
    data: dict[str, Any], source: str, env: os._Environ[str] | dict[str, str]
) -> None:
    base = Path(source).parent
    for section, keys in SECRET_KEYS.items():
        values = data.get(section)
        if not isinstance(values, dict):
            continue
        for key in keys:
            file_key = f"{key}_file"
            if file_key not in values:
                continue
            path = Path(str(values.pop(file_key)))
            if not path.is_absolute():
                credentials = env.get("CREDENTIALS_DIRECTORY")
                path = (Path(credentials) if credentials else base) / path
            try:
                values[key] = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{source}: {section}.{file_key}: cannot read {path}: {exc.strerror}"
                ) from None


def _one_line(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        what = "unknown key (a typo?)"
    elif kind == "missing":
        what = "required, missing"
    else:
        what = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {where}: {what}{more}"
