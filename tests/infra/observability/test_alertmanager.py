"""Alertmanager's config: valid for Alertmanager itself (amtool), critical alerts page and
warnings go to chat (amtool's routing test), and a RayService's warnings are held back
while a critical alert about that service fires (the inhibition rules)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config.secrets import secret_issues
from infra.config.sources import load_stack_file
from infra.observability.monitoring import alertmanager_config
from localrun.toolchain import SYSTEM_TOOLS, find_tool, install_hint

PAGERDUTY_KEY = "0123456789abcdef0123456789abcdef"
SLACK_TOKEN = "xoxb-0000000000-0000000000000-test"


def _tool(name: str) -> str:
    # The install step provisions them (localrun.toolchain); missing must fail, not skip.
    found = find_tool(name)
    assert found, install_hint(SYSTEM_TOOLS[name])
    return found


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "alertmanager.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _config(*, pager: bool = True, chat: bool = True, stack: str = "prod") -> dict[str, Any]:
    return alertmanager_config(
        load_stack_file(stack), PAGERDUTY_KEY if pager else None, SLACK_TOKEN if chat else None
    )


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_amtool_accepts_the_generated_config(stack_name: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _config(stack=stack_name))
    done = subprocess.run([_tool("amtool"), "check-config", str(path)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 receivers" in done.stdout and "3 inhibit rules" in done.stdout


def test_amtool_rejects_a_route_to_an_unknown_receiver(tmp_path: Path) -> None:
    config = _config()
    config["route"]["routes"][1]["receiver"] = "nobody"
    done = subprocess.run([_tool("amtool"), "check-config", str(_write(tmp_path, config))],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode != 0


ROUTES = [
    # (pager configured, chat configured, alert labels, the receiver it reaches)
    (True, True, ["severity=critical", "alertname=RayServiceNotReady", "rayservice=a"], "pager"),
    (True, True, ["severity=warning", "alertname=ServeQueueHigh", "rayservice=a"], "chat"),
    (True, True, ["severity=info", "alertname=GpuAllocatedButIdle"], "null"),
    (True, True, ["severity=none", "alertname=Watchdog"], "null"),
    (False, True, ["severity=critical", "alertname=RayHeadDown"], "chat"),  # no pager: chat
    (False, False, ["severity=critical", "alertname=RayHeadDown"], "null"),
]


@pytest.mark.parametrize(("pager", "chat", "labels", "receiver"), ROUTES)
def test_amtool_routes_each_severity_to_its_receiver(
    pager: bool, chat: bool, labels: list[str], receiver: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, _config(pager=pager, chat=chat))

    def route(expected: str) -> subprocess.CompletedProcess[str]:
        command = [_tool("amtool"), "config", "routes", "test", f"--config.file={path}",
                   f"--verify.receivers={expected}", *labels]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, check=False)

    done = route(receiver)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receiver
    wrong = next(r for r in ("pager", "chat", "null") if r != receiver)
    assert route(wrong).returncode != 0  # the check can fail


_MATCHER = re.compile(r'^(\w+)(=~|!~|!=|=)"(.*)"$')


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    """One Alertmanager matcher; a missing label is the empty string, regexes anchored."""
    found = _MATCHER.match(matcher)
    assert found, matcher
    name, op, value = found.groups()
    have = labels.get(name, "")
    if op in {"=~", "!~"}:
        return bool(re.fullmatch(value, have)) is (op == "=~")
    return (have == value) is (op == "=")


def inhibited(config: dict[str, Any], alerts: list[dict[str, str]]) -> list[bool]:
    """Alertmanager's inhibition (inhibit/inhibit.go) applied to firing alerts: a target
    is muted by another alert matching a rule's source, with equal values (missing
    counts as empty) for every `equal` label. amtool cannot evaluate inhibition, and the
    distribution's Alertmanager server does not start without its packaged templates."""

    def mutes(rule: dict[str, Any], source: dict[str, str], target: dict[str, str]) -> bool:
        return (
            source is not target
            and all(_matches(m, source) for m in rule["source_matchers"])
            and all(_matches(m, target) for m in rule["target_matchers"])
            and all(source.get(k, "") == target.get(k, "") for k in rule["equal"])
        )

    rules = config["inhibit_rules"]
    return [
        any(mutes(rule, source, target) for rule in rules for source in alerts) for target in alerts
    ]


def test_a_critical_alert_holds_back_only_its_own_rayservices_warnings() -> None:
    def alert(alertname: str, severity: str, **labels: str) -> dict[str, str]:
        return {"alertname": alertname, "severity": severity, "namespace": "ray", **labels}

    firing = [
        alert("RayServiceNotReady", "critical", rayservice="embeddings", name="embeddings"),
        alert("ServeQueueHigh", "warning", rayservice="embeddings", application="embeddings"),
        alert("ServeP99LatencyHighEmbeddings", "warning", rayservice="embeddings"),
        alert("ServeQueueHigh", "warning", rayservice="classifier", application="classifier"),
        # A critical alert about no RayService must not silence every unlabelled warning.
        alert("GcsRedisDown", "critical"),
        alert("PrometheusScrapeTargetsDown", "warning", job="x"),
        alert("GpuAllocatedButIdle", "info", pod="p"),
    ]
    assert inhibited(_config(), firing) == [False, True, True, False, False, False, False]
    # Without the rule's rayservice matcher, GcsRedisDown would silence the other warnings.
    loose = _config()
    loose["inhibit_rules"][0]["source_matchers"] = ['severity="critical"']
    assert inhibited(loose, firing)[5:] == [True, True]


def test_production_needs_both_receivers_and_refuses_malformed_ones_without_echoing() -> None:
    prod = load_stack_file("prod")
    missing = {i.path for i in secret_issues({}, prod)}
    assert {"alertPagerDutyKey", "alertSlackToken"} <= missing
    assert not {"alertPagerDutyKey", "alertSlackToken"} & {
        i.path for i in secret_issues({}, load_stack_file("dev"))
    }  # dev may run without paging
    wrong = {"alertPagerDutyKey": "https://events.pagerduty.com/x", "alertSlackToken": "xoxp-123"}
    issues = {i.path: i.message for i in secret_issues(wrong, prod)}
    assert "PagerDuty integration key" in issues["alertPagerDutyKey"]
    assert "Slack bot token" in issues["alertSlackToken"]
    assert not any(value in str(issues) for value in wrong.values())
    fine = {"alertPagerDutyKey": PAGERDUTY_KEY, "alertSlackToken": SLACK_TOKEN}
    assert not {"alertPagerDutyKey", "alertSlackToken"} & {
        i.path for i in secret_issues(fine, prod)
    }
