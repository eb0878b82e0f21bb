"""A corpus of broken configurations: each one clear line, no traceback, exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

GOOD = """
[planfix]
account = "acme"
api_key = "k"
token = "t"
"""

CORPUS: list[tuple[str, str, str]] = [
    ("broken TOML", GOOD + "[watch\n", "not valid TOML"),
    ("not UTF-8", "", "not UTF-8 text"),
    ("unknown section", GOOD + "[wacth]\ntasks = [1]\n", "wacth: unknown key"),
    ("unknown key", GOOD + "tokken = 'x'\n", "planfix.tokken: unknown key"),
    (
        "wrong type",
        GOOD + "daily_quota = 'lots'\n",
        "planfix.daily_quota: Input should be a valid integer",
    ),
    (
        "negative quota",
        GOOD + "daily_quota = -5\n",
        "planfix.daily_quota: Input should be greater than or equal to 1",
    ),
    (
        "missing account",
        GOOD.replace('account = "acme"\n', ""),
        "planfix.account: required, missing",
    ),
    ("missing secret", GOOD.replace('token = "t"\n', ""), "set planfix.token, or planfix.login"),
    (
        "unreadable secret file",
        GOOD.replace('token = "t"', 'token_file = "/nonexistent/token"'),
        "planfix.token_file: cannot read /nonexistent/token",
    ),
    (
        "http to a remote host",
        GOOD + 'endpoint = "http://api.planfix.ru/xml/"\n',
        "planfix.endpoint: PlanFix accepts HTTPS only",
    ),
    ("unknown time zone", GOOD + 'timezone = "Moscow"\n', "planfix.timezone: unknown time zone"),
    (
        "unknown event",
        GOOD + '[watch]\nevents = ["overdue"]\n',
        "watch.events: unknown event 'overdue'",
    ),
    (
        "unknown channel type",
        GOOD + '[channels.x]\ntype = "sms"\n',
        "channels.x.type: 'sms' is not a channel type",
    ),
    (
        "channel key missing",
        GOOD + '[channels.x]\ntype = "telegram"\nchat_ids = [1]\n',
        "channels.x.bot_token: required, missing",
    ),
    (
        "bad quiet hours",
        GOOD + '[channels.x]\ntype = "console"\nquiet_hours = "late"\n',
        'channels.x.quiet_hours: quiet_hours is "HH:MM-HH:MM"',
    ),
    (
        "webhook over http",
        GOOD + '[channels.x]\ntype = "webhook"\nurl = "http://example.com/h"\n',
        "channels.x.url: a webhook URL must be https://",
    ),
    (
        "Telegram API over http",
        GOOD
        + '[channels.x]\ntype = "telegram"\nbot_token = "1:x"\nchat_ids = [1]\n'
        + 'api_url = "http://bot-api.example.com"\n',
        "channels.x.api_url: must be https://",
    ),
    (
        "SMTP password without TLS",
        GOOD
        + '[channels.x]\ntype = "email"\nhost = "smtp.example.com"\nsecurity = "none"\n'
        + 'username = "u"\npassword = "p"\nsender = "a@example.com"\nrecipients = ["b@example.com"]\n',
        "channels.x: a password goes only over TLS",
    ),
    (
        "route to no channel",
        GOOD + '[[routes]]\nchannels = ["nope"]\n',
        "routes[0].channels: no channel named 'nope'",
    ),
    (
        "bot on a non-telegram channel",
        GOOD + '[channels.x]\ntype = "console"\n[bot]\nchannel = "x"\n',
        "bot.channel: 'x' is not a [channels.*] of type telegram",
    ),
    (
        "bad duration",
        GOOD + '[alerts]\nrepeat_overdue_every = "often"\n',
        'alerts.repeat_overdue_every: a duration like "90s"',
    ),
    (
        "bad metrics address",
        GOOD + '[metrics]\nlisten = "everywhere"\n',
        'metrics.listen: "host:port"',
    ),
]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """`planfix-notifier check` on a config file, as an admin would run it."""
    return subprocess.run(
        [sys.executable, "-m", "notifier", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(("name", "text", "message"), CORPUS, ids=[c[0] for c in CORPUS])
def test_one_clear_line_and_exit_2(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / "notifier.toml"
    path.write_bytes(
        text.encode() if name != "not UTF-8" else "[planfix]\naccount = 'Привет'".encode("cp1251")
    )
    done = check(path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"planfix-notifier: {path}: ") and message in lines[0], lines[0]


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(GOOD)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make it a directory instead
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        path.unlink()
        path.mkdir()
    done = check(path)
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr
