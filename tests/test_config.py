"""Configuration: the example loads, every mistake is one clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from notifier.channels.base import channel_types
from notifier.config import Config, ConfigError, RouteSection, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "notifier.example.toml"

MINIMAL = """
[planfix]
account = "acme"
api_key = "k"
token = "t"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.first.planfix.account == "acme"
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    text = EXAMPLE.read_text(encoding="utf-8")
    models: dict[str, type[BaseModel]] = {"routes": RouteSection}
    for name, field in Config.model_fields.items():
        if name == "accounts":  # (shown commented out: an example polls one account)
            assert "# [accounts.client2]" in text and "# [accounts.client2.watch]" in text
            continue
        assert name in example, f"[{name}] missing from the example"
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            models[name] = field.annotation
    for kind, channel in channel_types().items():
        if kind in ("console", "email", "telegram", "webhook"):
            models[f"channels ({kind})"] = channel.Options
    for name, model in models.items():
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name  # (state.schema: BaseModel has its own `schema`)
            assert f"{key} =" in text, f"{name}: {key} is not documented in the example"


def test_minimal_config_has_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.first.planfix.daily_quota == 5000
    assert config.first.planfix.endpoint == "https://api.planfix.ru/xml/"
    assert config.watch.min_interval_s == 60


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            '[planfix]\naccount = "a"\napi_key = "k"\ntoken = "t"\ntokken = "x"',
            "planfix.tokken: unknown key",
        ),
        ('[planfix]\naccount = "a"\ntoken = "t"', "planfix.api_key: required, missing"),
        ('[planfix]\naccount = "a"\napi_key = "k"', "set planfix.token, or planfix.login"),
        (MINIMAL + 'daily_quota = "many"', "planfix.daily_quota: Input should be a valid integer"),
        (
            MINIMAL + 'endpoint = "http://api.planfix.ru/xml/"',
            "planfix.endpoint: PlanFix accepts HTTPS only",
        ),
        (MINIMAL + 'timezone = "Mars/Olympus"', "planfix.timezone: unknown time zone"),
        (
            MINIMAL + '[watch]\nevents = ["status_chnaged"]',
            "watch.events: unknown event 'status_chnaged'",
        ),
        (MINIMAL + "[planfix", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key_on_one_line(tmp_path: Path, extra: str, message: str) -> None:
    path = write(tmp_path, extra)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    text = str(caught.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_secrets_from_files_and_environment(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "token").write_text("from-file\n")
    path = write(tmp_path, '[planfix]\naccount = "a"\ntoken_file = "token"\n')
    environ = {"CREDENTIALS_DIRECTORY": str(creds), "PLANFIX_NOTIFIER_PLANFIX_API_KEY": "from-env"}
    config = load_config(path, environ=environ)
    assert config.first.planfix.token is not None
    assert config.first.planfix.token.get_secret_value() == "from-file"
    assert config.first.planfix.api_key.get_secret_value() == "from-env"
    assert "from-file" not in repr(config) and "from-env" not in repr(config)


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, '[planfix]\naccount = "a"\napi_key = "k"\ntoken_file = "/nope/token"\n')
    with pytest.raises(ConfigError, match=r"planfix\.token_file: cannot read /nope/token"):
        load_config(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


def test_channel_secrets_from_the_environment(tmp_path: Path) -> None:
    text = MINIMAL + '[channels.team]\ntype = "telegram"\nchat_ids = [1]\n'
    environ = {"PLANFIX_NOTIFIER_CHANNELS_TEAM_BOT_TOKEN": "42:from-the-environment"}
    config = load_config(write(tmp_path, text), environ=environ)
    assert "42:from-the-environment" in config.secrets()
    with pytest.raises(ConfigError, match=r"channels.team.bot_token: required, missing"):
        load_config(write(tmp_path, text), environ={})


def test_a_push_listener_needs_a_secret_which_may_come_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '\n[push]\nlisten = "0.0.0.0:9465"\n')
    with pytest.raises(ConfigError, match=r"notifier.toml: push.secret: required"):
        load_config(path, environ={})
    (tmp_path / "push.secret").write_text("from-a-file\n", encoding="utf-8")
    path.write_text(path.read_text() + 'secret_file = "push.secret"\n', encoding="utf-8")
    config = load_config(path, environ={})
    assert config.push.secret is not None
    assert config.push.secret.get_secret_value() == "from-a-file"
    assert "from-a-file" in config.secrets()  # redacted from every log line
    env = {"PLANFIX_NOTIFIER_PUSH_SECRET": "from-the-env"}
    path.write_text(MINIMAL + '\n[push]\nlisten = "0.0.0.0:9465"\n', encoding="utf-8")
    assert load_config(path, environ=env).push.secret.get_secret_value() == "from-the-env"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"planfix": {"acount": "x"}}, "planfix.acount: unknown key (did you mean account?)"),
        (
            {"planfix": {"tasks": [1]}},
            "planfix.tasks: unknown key (tasks belongs in [watch], not [planfix])",
        ),
        ({"tasks": [1]}, "tasks: unknown key (tasks belongs in [watch])"),
        ({"watch": {"taks": [1]}}, "watch.taks: unknown key (did you mean tasks?)"),
        (
            {"planfix": {"account": "acme.planfix.ru"}},
            'planfix.account: the account\'s name, not its address: use "acme"',
        ),
        ({"planfix": {"account": "https://acme.planfix.ru/"}}, 'use "acme"'),
        (
            {"metrics": {"listen": "127.0.0.1:99999"}},
            'metrics.listen: "host:port", the port 0 to 65535',
        ),
        (
            {"channels": {"t": {"type": "telegram", "bot_token": "1:x", "chat_idz": [1]}}},
            "channels.t.chat_idz: unknown key (did you mean chat_ids?)",
        ),
    ],
)
def test_a_slip_gets_one_line_that_says_what_to_write(table: dict[str, Any], said: str) -> None:
    data: dict[str, Any] = {"planfix": {"account": "acme", "api_key": "k", "token": "t"}}
    for section, values in table.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, source="n.toml", environ={})
    assert said in str(caught.value) and str(caught.value).startswith("n.toml: ")
    assert "\n" not in str(caught.value)


def test_secret_files_follow_the_units_layout_by_hand_and_under_systemd(tmp_path: Path) -> None:
    """The unit loads /etc/planfix-notifier/credentials/* as secret_<name>; the
    config names planfix_token. The service finds it in $CREDENTIALS_DIRECTORY,
    `check` run by hand finds it in credentials/ beside the config."""
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "planfix_token").write_text("by-hand-token\n")
    loaded = tmp_path / "run-credentials"
    loaded.mkdir()
    (loaded / "secret_planfix_token").write_text("systemd-token\n")
    path = write(tmp_path, MINIMAL.replace('token = "t"', 'token_file = "planfix_token"'))
    by_hand = load_config(path, environ={})
    under_systemd = load_config(path, environ={"CREDENTIALS_DIRECTORY": str(loaded)})
    assert by_hand.first.planfix.token is not None and under_systemd.first.planfix.token is not None
    assert by_hand.first.planfix.token.get_secret_value() == "by-hand-token"
    assert under_systemd.first.planfix.token.get_secret_value() == "systemd-token"
    missing = write(tmp_path, MINIMAL.replace('token = "t"', 'token_file = "nowhere"'))
    with pytest.raises(ConfigError) as caught:
        load_config(missing, environ={})
    said = str(caught.value)
    assert f"{tmp_path / 'nowhere'}" in said and f"{tmp_path / 'credentials' / 'nowhere'}" in said
    assert "$CREDENTIALS_DIRECTORY is not set" in said


def test_a_second_mistake_is_named_too() -> None:
    data = {"planfix": {"acount": "x", "api_key": "k", "token": "t", "daily_quota": 0}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict(data, source="n.toml", environ={})
    assert str(caught.value) == (
        "n.toml: planfix.acount: unknown key (did you mean account?); "
        "also planfix.daily_quota: Input should be greater than or equal to 1"
    )
