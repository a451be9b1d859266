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
        _series(
            "ray_serve_http_request_latency_ms_bucket",
            {"namespace": "ray", "rayservice": "serving", "application": app, "le": le},
            v,
        )
        for le, v in buckets.items()
    ]


def _scenario(series: list[dict[str, str]], checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"interval": "1m", "input_series": series, "alert_rule_test": checks}


def _quiet(at: str, *names: str) -> list[dict[str, Any]]:
    return [{"eval_time": at, "alertname": name, "exp_alerts": []} for name in names]


def _fires(
    rules: dict[str, dict[str, Any]], at: str, name: str, *labels: dict[str, str]
) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name,
            "exp_alerts": [_expected(rules[name], one) for one in labels]}  # fmt: skip


def serve_tests(stack: StackConfig, rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    apps = [app for service in stack.services for app in service.apps]
    hot, calm = apps[0].name, apps[1].name
    # Our PodMonitors give every Ray series its pod's namespace and RayService.
    svc = {"namespace": "ray", "rayservice": "serving"}
    serving = {**svc, "ray_io_cluster": "serving-x1"}
    ok = {**svc, "ray_io_cluster": "ok-x2"}
    series = [
        _series("kuberay_service_condition_ready", {"namespace": "ray", "name": "broken", "condition": "false"}, "1x20"),
        _series("kuberay_service_condition_ready", {"namespace": "ray", "name": "fine", "condition": "true"}, "1x20"),
        _series("up", {**serving, "ray_node_type": "head"}, "0x20"),
        _series("up", {**ok, "ray_node_type": "head"}, "1x20"),
        _series("ray_serve_num_http_requests_total", {**svc, "application": hot}, "0+100x20"),
        _series("ray_serve_num_http_requests_total", {**svc, "application": calm}, "0+100x20"),
        _series("ray_serve_num_http_error_requests_total", {**svc, "application": hot, "error_code": "500"}, "0+10x20"),
        _series("ray_serve_num_http_error_requests_total", {**svc, "application": calm, "error_code": "503"}, "0+3x20"),
        _series("ray_serve_deployment_queued_queries", {**svc, "application": hot, "deployment": "D"}, f"{stack.alert_queued_requests + 30}x20"),
        _series("ray_serve_deployment_queued_queries", {**svc, "application": calm, "deployment": "D"}, "3x20"),
        # A backlog at serving-x1's ingress (HAProxy mode: it waits inside the replicas).
        _series("ray_serve_num_ongoing_http_requests", {**serving, "node": "a"}, f"{stack.alert_queued_requests + 158}x20"),
        _series("ray_serve_replica_processing_queries", {**serving, "replica": "a"}, "64x20"),
        _series("ray_serve_replica_processing_queries", {**serving, "replica": "b"}, "64x20"),
        _series("ray_serve_num_ongoing_http_requests", ok, "70x20"),
        _series("ray_serve_replica_processing_queries", ok, "64x20"),
        _series("ray_serve_deployment_replica_healthy", {**svc, "application": hot, "deployment": "D", "replica": "a"}, "0x20"),
        _series("ray_serve_deployment_replica_healthy", {**svc, "application": hot, "deployment": "D", "replica": "b"}, "1x20"),
        _series("ray_serve_deployment_replica_healthy", {**svc, "application": calm, "deployment": "D", "replica": "c"}, "1x20"),
        *_latency_series(hot, slow=True),
        *_latency_series(calm, slow=False),
    ]  # fmt: skip
    fired = {
        "RayServiceNotReady": [{"namespace": "ray", "name": "broken", "rayservice": "broken"}],
        "RayHeadDown": [serving],
        "RayHeadMetricsMissing": [],
        "ServeHighErrorRatio": [{**svc, "application": hot}],
        "ServeRequestsRejected": [{**svc, "application": calm}],
        "ServeQueueHigh": [{**svc, "application": hot, "deployment": "D"}],
        "ServeIngressBacklog": [serving],
        "ServeReplicasUnhealthy": [{**svc, "application": hot, "deployment": "D"}],
    }
    for app in apps:
        name = next(a for a in rules if a.startswith("ServeP99LatencyHigh") and
                    rules[a]["annotations"]["summary"].startswith(f"{app.name} "))  # fmt: skip
        fired[name] = [{**svc, "application": app.name}] if app.name == hot else []
    return [
        # Before `for:` has passed nothing fires; at 19m every alert above does.
        _scenario(series, [*_quiet("2m", *fired),
                           *(_fires(rules, "19m", name, *fired[name]) for name in fired)]),
        # no head scraped at all
        _scenario([_series("up", {"job": "other"}, "1x30")], [
            *_quiet("10m", "RayHeadMetricsMissing"),
            _fires(rules, "20m", "RayHeadMetricsMissing", {"ray_node_type": "head"}),
        ]),
    ]  # fmt: skip


def platform_tests(stack: StackConfig, rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    operator = {"job": "kuberay-operator", "namespace": "kuberay-system"}
    pending = stack.alert_pod_pending_minutes

    def pod(name: str, namespace: str = "ray") -> dict[str, str]:
        return {"namespace": namespace, "pod": name}

    def labels(name: str, group: str, namespace: str = "ray") -> dict[str, str]:
        return {**pod(name, namespace), "label_app_kubernetes_io_instance": "serving",
                "label_ray_io_group": group}  # fmt: skip

    total = f"{pending + 30}"
    pods = [
        # no GPU node: unschedulable, asks for a GPU
        _series("kube_pod_status_phase", {**pod("w-gpu"), "phase": "Pending"}, f"1x{total}"),
        _series("kube_pod_status_unschedulable", pod("w-gpu"), f"1x{total}"),
        _series("kube_pod_container_resource_requests", {**pod("w-gpu"), "container": "ray-worker", "resource": "nvidia_com_gpu", "unit": "integer"}, f"1x{total}"),
        _series("kube_pod_container_resource_requests", {**pod("w-gpu"), "container": "ray-worker", "resource": "cpu", "unit": "core"}, f"4x{total}"),
        _series("kube_pod_labels", labels("w-gpu", "l4"), f"1x{total}"),
        # no node fits, no GPU asked
        _series("kube_pod_status_phase", {**pod("w-cpu"), "phase": "Pending"}, f"1x{total}"),
        _series("kube_pod_status_unschedulable", pod("w-cpu"), f"1x{total}"),
        _series("kube_pod_container_resource_requests", {**pod("w-cpu"), "container": "ray-worker", "resource": "cpu", "unit": "core"}, f"4x{total}"),
        _series("kube_pod_labels", labels("w-cpu", "cpu"), f"1x{total}"),
        # scheduled, image still pulling
        _series("kube_pod_status_phase", {**pod("w-pull"), "phase": "Pending"}, f"1x{total}"),
        _series("kube_pod_labels", labels("w-pull", "cpu"), f"1x{total}"),
        # quiet: Pending only for 3 minutes, then running
        _series("kube_pod_status_phase", {**pod("w-quick"), "phase": "Pending"}, f"1x3 0x{total}"),
        _series("kube_pod_labels", labels("w-quick", "cpu"), f"1x{total}"),
        # quiet: Pending in another namespace, and a Pending pod that is not Ray's
        _series("kube_pod_status_phase", {**pod("x", "other"), "phase": "Pending"}, f"1x{total}"),
        _series("kube_pod_labels", labels("x", "cpu", "other"), f"1x{total}"),
        _series("kube_pod_status_phase", {**pod("not-ray"), "phase": "Pending"}, f"1x{total}"),
        _series("kube_pod_labels", pod("not-ray"), f"1x{total}"),
    ]  # fmt: skip
    waiting = [
        {**pod(name), "rayservice": "serving", "ray_group": group, "reason": reason}
        for name, group, reason in [
            ("w-gpu", "l4", "NoGpuNode"),
            ("w-cpu", "cpu", "Unschedulable"),
            ("w-pull", "cpu", "ContainersNotStarted"),
        ]
    ]
    down_job = [_series("up", {"namespace": "monitoring", "job": "a", "instance": str(i)},
                        "0x30" if i == 0 else "1x30") for i in range(5)]  # fmt: skip
    fine_job = [_series("up", {"namespace": "monitoring", "job": "b", "instance": str(i)},
                        "0x30" if i == 0 else "1x30") for i in range(11)]  # fmt: skip
    return [
        # The operator answers for 10 minutes, then stops: pages 10 minutes later.
        _scenario([_series("up", operator, "1x10 0x30")], [
            *_quiet("15m", "KubeRayOperatorDown"),
            _fires(rules, "25m", "KubeRayOperatorDown", {}),
        ]),
        # A healthy operator, and gone entirely (no target at all): both as meant.
        _scenario([_series("up", operator, "1x40")], _quiet("30m", "KubeRayOperatorDown")),
        _scenario([_series("up", {"job": "other"}, "1x40")], [
            _fires(rules, "30m", "KubeRayOperatorDown", {}),
        ]),
        # 20% of RayService reconciles fail; 1 in 60 RayCluster reconciles does.
        _scenario([
            _series("controller_runtime_reconcile_total", {**operator, "controller": "rayservice", "result": "success"}, "0+48x40"),
            _series("controller_runtime_reconcile_total", {**operator, "controller": "rayservice", "result": "error"}, "0+12x40"),
            _series("controller_runtime_reconcile_errors_total", {**operator, "controller": "rayservice"}, "0+12x40"),
            _series("controller_runtime_reconcile_total", {**operator, "controller": "raycluster", "result": "success"}, "0+59x40"),
            _series("controller_runtime_reconcile_total", {**operator, "controller": "raycluster", "result": "error"}, "0+1x40"),
            _series("controller_runtime_reconcile_errors_total", {**operator, "controller": "raycluster"}, "0+1x40"),
        ], [
            *_quiet("10m", "KubeRayReconcileErrors"),
            _fires(rules, "30m", "KubeRayReconcileErrors",
                   {"namespace": "kuberay-system", "controller": "rayservice"}),
        ]),
        _scenario(pods, [
            *_quiet(f"{pending - 2}m", "RayPodPending"),
            _fires(rules, f"{pending + 5}m", "RayPodPending", *waiting),
        ]),
        # One rule group keeps failing, another does not.
        _scenario([
            _series("prometheus_rule_evaluation_failures_total", {"namespace": "monitoring", "rule_group": "rayserve;broken"}, "0+1x40"),
            _series("prometheus_rule_evaluation_failures_total", {"namespace": "monitoring", "rule_group": "rayserve;fine"}, "0x40"),
        ], [
            *_quiet("5m", "PrometheusRuleEvaluationFailures"),
            _fires(rules, "25m", "PrometheusRuleEvaluationFailures",
                   {"namespace": "monitoring", "rule_group": "rayserve;broken"}),
        ]),
        # 1 of 5 targets down (20%) fires; 1 of 11 (9%) does not.
        _scenario(down_job + fine_job, [
            *_quiet("10m", "PrometheusScrapeTargetsDown"),
            _fires(rules, "20m", "PrometheusScrapeTargetsDown", {"namespace": "monitoring", "job": "a"}),
        ]),
    ]  # fmt: skip


def gpu_tests(rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    gpu = {"gpu": "0", "Hostname": "gke-l4-1"}
    operator = {"namespace": "gpu-operator"}
    return [
        _scenario([
            _series("DCGM_FI_DEV_FB_USED", gpu, "95x200"),
            _series("DCGM_FI_DEV_FB_FREE", gpu, "5x200"),
            _series("DCGM_FI_DEV_FB_USED", {**gpu, "gpu": "1"}, "50x200"),
            _series("DCGM_FI_DEV_FB_FREE", {**gpu, "gpu": "1"}, "50x200"),
            _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "pod": "embeddings-worker"}, "2x200"),
            _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "gpu": "1", "pod": "busy"}, "80x200"),
            _series("DCGM_FI_DEV_GPU_UTIL", {**gpu, "gpu": "2", "pod": ""}, "0x200"),
        ], [
            *_quiet("5m", "GpuMemoryNearFull"),
            _fires(rules, "15m", "GpuMemoryNearFull", gpu),
            *_quiet("50m", "GpuAllocatedButIdle"),
            _fires(rules, "150m", "GpuAllocatedButIdle", {**gpu, "pod": "embeddings-worker"}),
        ]),
        # dcgm-exporter runs on 1 of 2 GPU nodes, the operator has no pod; the rest is ready.
        _scenario([
            _series("kube_daemonset_status_number_ready", {**operator, "daemonset": "nvidia-dcgm-exporter"}, "1x30"),
            _series("kube_daemonset_status_desired_number_scheduled", {**operator, "daemonset": "nvidia-dcgm-exporter"}, "2x30"),
            _series("kube_daemonset_status_number_ready", {**operator, "daemonset": "gpu-feature-discovery"}, "2x30"),
            _series("kube_daemonset_status_desired_number_scheduled", {**operator, "daemonset": "gpu-feature-discovery"}, "2x30"),
            _series("kube_deployment_status_replicas_available", {**operator, "deployment": "gpu-operator"}, "0x30"),
            _series("kube_deployment_spec_replicas", {**operator, "deployment": "gpu-operator"}, "1x30"),
            _series("kube_deployment_status_replicas_available", {"namespace": "ray", "deployment": "x"}, "0x30"),
            _series("kube_deployment_spec_replicas", {"namespace": "ray", "deployment": "x"}, "1x30"),
        ], [
            *_quiet("10m", "GpuOperatorComponentsNotReady"),
            _fires(rules, "20m", "GpuOperatorComponentsNotReady",
                   {**operator, "daemonset": "nvidia-dcgm-exporter"},
                   {**operator, "deployment": "gpu-operator"}),
        ]),
    ]  # fmt: skip


def redis_tests(stack: StackConfig, rules: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    # As our PodMonitor labels the exporter of `serving`'s GCS Redis.
    redis = {"namespace": "ray", "rayservice": "serving", "pod": "serving-gcs-redis-0"}
    target = {**redis, "job": "monitoring/gcs-redis"}
    calm = {**target, "rayservice": "calm", "pod": "calm-gcs-redis-0"}
    clients = stack.alert_redis_connected_clients
    # CPU-seconds per minute of samples: 0.6 + 0.6 = 1.2 cores; the calm one 0.1.
    return [
        _scenario([
            _series("redis_memory_used_bytes", target, "900x30"),
            _series("redis_memory_max_bytes", target, "1000x30"),
            _series("redis_memory_used_bytes", calm, "100x30"),
            _series("redis_memory_max_bytes", calm, "1000x30"),
            _series("redis_connected_clients", target, f"{clients + 50}x30"),
            _series("redis_connected_clients", calm, "4x30"),
            _series("redis_cpu_sys_seconds_total", target, "0+36x30"),
            _series("redis_cpu_user_seconds_total", target, "0+36x30"),
            _series("redis_cpu_sys_seconds_total", calm, "0+3x30"),
            _series("redis_cpu_user_seconds_total", calm, "0+3x30"),
            _series("redis_up", target, "1x30"),
            _series("up", target, "1x30"),
            _series("redis_up", calm, "1x30"),
            _series("up", calm, "1x30"),
        ], [
            *_quiet("5m", "GcsRedisMemoryHigh", "GcsRedisClientsHigh", "GcsRedisCpuHigh"),
            _fires(rules, "15m", "GcsRedisMemoryHigh", target),
            _fires(rules, "15m", "GcsRedisClientsHigh", target),
            _fires(rules, "15m", "GcsRedisCpuHigh", redis),
            *_quiet("25m", "GcsRedisDown"),
        ]),
        # One exporter answers but its Redis does not; another's pod is crashing (its
        # target is down); a third is fine.
        _scenario([
            _series("redis_up", target, "1x5 0x30"), _series("up", target, "1x35"),
            _series("up", calm, "1x5 0x30"),
            _series("redis_up", {**calm, "rayservice": "fine", "pod": "fine-0"}, "1x35"),
            _series("up", {**calm, "rayservice": "fine", "pod": "fine-0"}, "1x35"),
        ], [
            *_quiet("8m", "GcsRedisDown"),
            _fires(rules, "15m", "GcsRedisDown", redis, {**redis, "rayservice": "calm",
                                                        "pod": "calm-gcs-redis-0"}),
        ]),
        # No exporter scraped at all (every Redis pod is gone).
        _scenario([_series("up", {"job": "other"}, "1x30")], [
            _fires(rules, "10m", "GcsRedisDown", {}),
        ]),
    ]  # fmt: skip


def promtool_tests(stack: StackConfig) -> list[dict[str, Any]]:
    rules = _rules(stack)
    tests = [*serve_tests(stack, rules), *platform_tests(stack, rules)]
    if "GpuMemoryNearFull" in rules:
        tests += gpu_tests(rules)
    if "GcsRedisMemoryHigh" in rules:
        tests += redis_tests(stack, rules)
    tested = {check["alertname"] for test in tests for check in test["alert_rule_test"]}
    assert tested == set(rules), f"rules without a promtool test: {set(rules) - tested}"
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
