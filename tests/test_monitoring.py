"""monitoring/: the Prometheus rules pass promtool (and its unit tests of
when each alert fires), and the rules and the Grafana dashboard use only
metrics the service exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from notifier.ops.metrics import Metrics

MONITORING = Path(__file__).parent.parent / "monitoring"
RULES = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
OURS = re.compile(r"\bplanfix_notifier_[a-z_]+\b")
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if PROMTOOL is None:
        why = "promtool is not installed (apt-get install prometheus; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_rules_pass_promtool() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_each_alert_fires_when_it_should_and_not_before() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_name_the_alerts_people_look_for() -> None:
    names = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.MULTILINE))
    assert {"PlanfixFailing", "QuotaExhausted", "OutboxStuck", "NoPollRound",
            "ChannelFailing"} <= names  # fmt: skip


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_only_metrics_the_service_exports_are_used(source: str) -> None:
    text = RULES.read_text() if source == "rules" else "\n".join(dashboard_exprs())
    used = set(OURS.findall(text))
    assert used, f"the {source} use none of our metrics"
    unknown = used - Metrics().names()
    assert not unknown, f"the {source} use metrics the service does not export: {unknown}"


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    text = "\n".join(dashboard_exprs())
    for metric in ("polls_total", "quota_remaining", "deliveries_total",
                   "outbox_oldest_pending_age_seconds", "detection_delay_seconds_bucket"):  # fmt: skip
        assert f"planfix_notifier_{metric}" in text
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
