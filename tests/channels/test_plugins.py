"""A third-party channel, installed as a package, used from the config."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifier.app import build_channels, renderer_for
from notifier.channels.base import Delivered, Message, channel_types
from notifier.config import ConfigError, config_from_dict
from tests.alerts.samples import event

PLUGIN = """
from pathlib import Path
from typing import Literal

from notifier.channels.base import Channel, ChannelOptions, Delivered, Message, SendResult


class PigeonOptions(ChannelOptions):
    type: Literal["pigeon"] = "pigeon"
    loft: str


class PigeonChannel(Channel):
    Options = PigeonOptions

    def recipients(self) -> list[str]:
        return ["loft"]

    async def send(self, message: Message) -> SendResult:
        with open(self.options.loft, "a", encoding="utf-8") as out:
            out.write(self.renderer.text(message.events) + "\\n")
        return Delivered()
"""


def build_wheel(folder: Path) -> Path:
    """A real wheel of a one-module package that declares the entry point."""
    dist = "planfix_notifier_pigeon-0.1.dist-info"
    files = {
        "pigeon_channel.py": PLUGIN,
        f"{dist}/METADATA": "Metadata-Version: 2.1\nName: planfix-notifier-pigeon\nVersion: 0.1\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/entry_points.txt": "[planfix_notifier.channels]\npigeon = pigeon_channel:PigeonChannel\n",
    }
    record = []
    for name, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = folder / "planfix_notifier_pigeon-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    wheel = build_wheel(tmp_path_factory.mktemp("dist"))
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    sys.path.insert(0, str(site))
    yield
    sys.path.remove(str(site))
    sys.modules.pop("pigeon_channel", None)


MINIMAL = {"planfix": {"account": "acme", "api_key": "k", "token": "t"}}


async def test_an_installed_channel_is_used_from_the_config(
    installed: None, tmp_path: Path
) -> None:
    assert "pigeon" in channel_types()
    loft = tmp_path / "loft.txt"
    config = config_from_dict(
        {**MINIMAL, "channels": {"birds": {"type": "pigeon", "loft": str(loft)}}},
        source="t.toml",
        environ={},
    )
    channels = build_channels(config, renderer_for(config))
    result = await channels["birds"].send(Message("birds", "loft", (event(),)))
    assert isinstance(result, Delivered)
    assert "Статус: В работе → Завершённая" in loft.read_text()


def test_its_options_are_checked_like_ours(installed: None) -> None:
    with pytest.raises(ConfigError, match=r"t.toml: channels.birds.loft: required, missing"):
        config_from_dict(
            {**MINIMAL, "channels": {"birds": {"type": "pigeon"}}}, source="t.toml", environ={}
        )


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"channels.x.type: 'carrier' is not a channel type \(console, email"
    ):
        config_from_dict(
            {**MINIMAL, "channels": {"x": {"type": "carrier"}}}, source="t.toml", environ={}
        )


def test_a_channel_type_is_imported_only_when_configured(tmp_path: Path) -> None:
    # python-telegram-bot is 17 MB of the process: not loaded for a config
    # that has no Telegram channel (a fresh interpreter: this one has it).
    script = """
import sys
from notifier.app import build_channels, renderer_for
from notifier.config import config_from_dict
config = config_from_dict(
    {"planfix": {"account": "acme", "api_key": "k", "token": "t"},
     "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}}},
    source="t.toml", environ={})
build_channels(config, renderer_for(config))
print(sorted(m for m in ("telegram", "aiosmtplib") if m in sys.modules))
"""
    found = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    )
    assert found.stdout.strip() == "[]"
