"""Alert rules: valid, with a runbook, on known metrics, and firing just where meant (promtool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import PROJECT_ROOT, StackConfig
from infra.config.sources import load_stack_file
from infra.observability.alerts import prometheus_rule_manifest, rule_groups
from localrun.toolchain import SYSTEM_TOOLS, find_tool, install_hint
from tests.k8s_schemas import validation_errors
from tests.known_metrics import KNOWN, metric_names

PROMTOOL = find_tool("promtool")


def _rules(stack: StackConfig) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for group in rule_groups(stack) for r in group["rules"]}


def _expected(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool should report: labels plus annotations with $labels filled in."""

    def fill(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)

    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": {k: fill(v) for k, v in rule["annotations"].items()},
    }


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": values}


def _latency_series(app: str, slow: bool) -> list[dict[str, str]]:
    # 30 minutes of requests; slow: 90% between 1 s and 5 s, fast: all under 10 ms.
    buckets = {"10": "0+100x30", "1000": "0+100x30", "5000": "0+100x30", "+Inf": "0+100x30"}
    if slow:
        buckets = {"10": "0+0x30", "1000": "0+10x30", "5000": "0+100x30", "+Inf": "0+100x30"}
    return [
        _series("ray_serve_http_request_latency_ms_bucket", {"application": app, "le": le}, v)
        for le, v in buckets.items()
    ]


def promtool_tests(stack: StackConfig) -> list[dict[str, Any]]:
    rules = _rules(stack)
    apps = [app for service in stack.services for app in service.apps]
    hot, calm = apps[0].name, apps[1].name
    serving = {"namespace": "ray", "ray_io_cluster": "serving-x1"}
    series = [
        _series("kuberay_service_condition_ready", {"namespace": "ray", "name": "broken", "condition": "false"}, "1x20"),
        _series("kuberay_service_condition_ready", {"namespace": "ray", "name": "fine", "condition": "true"}, "1x20"),
        _series("up", {**serving, "ray_node_type": "head"}, "0x20"),
        _series("up", {"namespace": "ray", "ray_io_cluster": "ok-x2", "ray_node_type": "head"}, "1x20"),
        _series("ray_serve_num_http_requests_total", {"application": hot}, "0+100x20"),
        _series("ray_serve_num_http_requests_total", {"application": calm}, "0+100x20"),
        _series("ray_serve_num_http_error_requests_total", {"application": hot, "error_code": "500"}, "0+10x20"),
        _series("ray_serve_num_http_error_requests_total", {"application": calm, "error_code": "503"}, "0+3x20"),
        _series("ray_serve_deployment_queued_queries", {"application": hot, "deployment": "D"}, f"{stack.alert_queued_requests + 30}x20"),
        _series("ray_serve_deployment_queued_queries", {"application": calm, "deployment": "D"}, "3x20"),
        # A backlog at serving-x1's ingress (HAProxy mode: it waits inside the replicas).
        _series("ray_serve_num_ongoing_http_requests", {**serving, "node": "a"}, f"{stack.alert_queued_requests + 158}x20"),
        _series("ray_serve_replica_processing_queries", {**serving, "replica": "a"}, "64x20"),
        _series("ray_serve_replica_processing_queries", {**serving, "replica": "b"}, "64x20"),
        _series("ray_serve_num_ongoing_http_requests", {"namespace": "ray", "ray_io_cluster": "ok-x2"}, "70x20"),
        _series("ray_serve_replica_processing_queries", {"namespace": "ray", "ray_io_cluster": "ok-x2"}, "64x20"),
        _series("ray_serve_deployment_replica_healthy", {"application": hot, "deployment": "D", "replica": "a"}, "0x20"),
        _series("ray_serve_deployment_replica_healthy", {"application": hot, "deployment": "D", "replica": "b"}, "1x20"),
        _series("ray_serve_deployment_replica_healthy", {"application": calm, "deployment": "D", "replica": "c"}, "1x20"),
        *_latency_series(hot, slow=True),
        *_latency_series(calm, slow=False),
    ]  # fmt: skip
    fired = {
        "RayServiceNotReady": [{"namespace": "ray", "name": "broken"}],
        "RayHeadDown": [serving],
        "RayHeadMetricsMissing": [],
        "ServeHighErrorRatio": [{"application": hot}],
        "ServeRequestsRejected": [{"application": calm}],
        "ServeQueueHigh": [{"application": hot, "deployment": "D"}],
        "ServeIngressBacklog": [serving],
        "ServeReplicasUnhealthy": [{"application": hot, "deployment": "D"}],
    }
    for app in apps:
        name = next(a for a in rules if a.startswith("ServeP99LatencyHigh") and
                    rules[a]["annotations"]["summary"].startswith(f"{app.name} "))  # fmt: skip
        fired[name] = [{"application": app.name}] if app.name == hot else []
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                # Before `for:` has passed nothing fires; at 19m every alert above does.
                *({"eval_time": "2m", "alertname": name, "exp_alerts": []} for name in fired),
                *(
                    {
                        "eval_time": "19m",
                        "alertname": name,
                        "exp_alerts": [_expected(rules[name], labels) for labels in fired[name]],
                    }
                    for name in fired
                ),
            ],
        },
        {   # no head scraped at all
            "interval": "1m",
            "input_series": [_series("up", {"job": "other"}, "1x30")],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "RayHeadMetricsMissing", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "RayHeadMetricsMissing",
                    "exp_alerts": [_expected(rules["RayHeadMetricsMissing"], {"ray_node_type": "head"})],
                },
            ],
        },
    ]  # fmt: skip
    if "GpuMemoryNearFull" in rules:
        gpu = {"gpu": "0", "Hostname": "gke-l4-1"}
        tests.append(
            {
                "interval": "1m",
                "input_series": [
                    _series("DCGM_FI_DEV_FB_USED", gpu, "95x200"),
                    _series("DCGM_FI_DEV_FB_FREE", gpu, "5x200"),
                    _series("DCGM_FI_DEV_FB_USED", {**gpu, "gpu": "1"}, "50x200"),
                    _series("DCGM_FI_DEV_FB_FREE", {**gpu, "gpu": "1"}, "50x200"),
                    _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "pod": "embeddings-worker"}, "2x200"),
                    _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "gpu": "1", "pod": "busy"}, "80x200"),
                    _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "gpu": "2", "pod": ""}, "0x200"),
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "GpuMemoryNearFull", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "GpuMemoryNearFull",
                        "exp_alerts": [_expected(rules["GpuMemoryNearFull"], gpu)],
                    },
                    {"eval_time": "50m", "alertname": "GpuAllocatedButIdle", "exp_alerts": []},
                    {
                        "eval_time": "150m",
                        "alertname": "GpuAllocatedButIdle",
                        "exp_alerts": [
                            _expected(rules["GpuAllocatedButIdle"], {**gpu, "pod": "embeddings-worker"})
                        ],
                    },
                ],
            }
        )  # fmt: skip
    if "GcsRedisMemoryHigh" in rules:
        tests.append(
            {
                "interval": "1m",
                "input_series": [
                    _series("redis_memory_used_bytes", {"pod": "gcs-redis-0"}, "900x30"),
                    _series("redis_memory_max_bytes", {"pod": "gcs-redis-0"}, "1000x30"),
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "GcsRedisMemoryHigh", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "GcsRedisMemoryHigh",
                        "exp_alerts": [_expected(rules["GcsRedisMemoryHigh"], {"pod": "gcs-redis-0"})],
                    },
                ],
            }
        )  # fmt: skip
    return tests


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_prometheus_rule_validates_against_the_crd(stack_name: str) -> None:
    manifest = prometheus_rule_manifest(load_stack_file(stack_name), "monitoring")
    assert validation_errors(manifest) == []


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_every_alert_has_severity_summary_and_runbook(stack_name: str) -> None:
    runbooks = (PROJECT_ROOT / "docs" / "runbooks.md").read_text()
    anchors = set(re.findall(r"^## (\S+)", runbooks, re.MULTILINE))
    for name, rule in _rules(load_stack_file(stack_name)).items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        base = "ServeP99LatencyHigh" if name.startswith("ServeP99LatencyHigh") else name
        assert base in anchors, f"docs/runbooks.md has no section '## {base}'"
        assert rule["annotations"]["runbook_url"].endswith(f"#{name.lower()}")


@pytest.fixture(scope="module")
def promtool() -> str:
    # The install step provisions it (localrun.toolchain); missing must fail loudly, not skip.
    assert PROMTOOL, install_hint(SYSTEM_TOOLS["promtool"])
    return PROMTOOL


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_promtool_rule_tests_pass(stack_name: str, tmp_path: Path, promtool: str) -> None:
    stack = load_stack_file(stack_name)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(stack)}))
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": promtool_tests(stack),
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    check = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path,
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)


def test_a_wrong_expectation_fails_promtool(tmp_path: Path, promtool: str) -> None:
    """The rule tests can fail: expecting a quiet alert to fire is caught."""
    stack = load_stack_file("dev")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(stack)}))
    tests = promtool_tests(stack)
    tests[0]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "critical"}}]
    document = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode != 0


def test_alert_rules_use_only_known_metrics() -> None:
    for stack_name in ("dev", "prod"):
        for group in rule_groups(load_stack_file(stack_name)):
            for rule in group["rules"]:
                assert metric_names(rule["expr"]) <= KNOWN, rule["alert"]
