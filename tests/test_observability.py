"""Observability: monitors, the Prometheus stack's values, dashboards, Ray's metrics tab."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.config.sources import load_stack_file
from infra.observability.alerts import rule_groups
from infra.observability.dashboards import (
    DATASOURCE,
    all_dashboards,
    gpu_dashboard,
    overview_dashboard,
)
from infra.observability.monitoring import (
    alertmanager_config,
    kps_values,
    monitoring_objects,
    pod_monitors,
)
from infra.program.render import program_objects
from infra.program.runner import ProgramRun, is_secret, run_program
from tests.k8s_schemas import REFERENCE_DIR, set_keys, validation_errors, values_keys
from tests.known_metrics import KNOWN

PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "rate", "by", "on", "without", "histogram_quantile",
    "avg_over_time", "absent", "le", "and", "or", "unless", "bool", "humanizePercentage",
    "clamp_min", "label_replace", "max_over_time", "vector",
}  # fmt: skip
# Ray's own dashboards also read its autoscaler's metrics (the head's `as-metrics` port).
RAY_PREFIXES = ("ray_", "autoscaler_")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and groupings removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)  # string arguments (label_replace)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if n not in PROMQL_WORDS and not n.isdigit()}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_every_monitoring_object_validates(stack_name: str) -> None:
    objects = monitoring_objects(load_stack_file(stack_name))
    kinds = [o["kind"] for o in objects]
    assert kinds.count("PodMonitor") == 3 and "PrometheusRule" in kinds
    for obj in objects:
        assert validation_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def test_pod_monitors_scrape_the_ray_ports() -> None:
    head, worker, redis = pod_monitors("ray")
    assert [e["port"] for e in head["spec"]["podMetricsEndpoints"]] == [
        "metrics", "as-metrics", "dash-metrics"]  # fmt: skip
    assert [e["port"] for e in worker["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert redis["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "gcs-redis"}
    relabel = head["spec"]["podMetricsEndpoints"][0]["relabelings"]
    assert {r["targetLabel"] for r in relabel} == {"ray_io_cluster", "ray_node_type"}


def test_ray_head_declares_every_port_the_monitors_scrape() -> None:
    (rayservice,) = [o for o in program_objects("dev") if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    head_ports = {
        p["name"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {"metrics", "as-metrics", "dash-metrics"} <= head_ports
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "metrics" in {p["name"] for p in worker["ports"]}


def test_kps_values_keys_exist_in_the_pinned_chart() -> None:
    known = values_keys(REFERENCE_DIR / "kube-prometheus-stack-88.5.3" / "values.yaml")
    free = (
        "prometheusOperator.nodeSelector",
        "prometheus.prometheusSpec.nodeSelector",
        "prometheus.prometheusSpec.storageSpec",
        "alertmanager.alertmanagerSpec.nodeSelector",
    )
    values = kps_values(load_stack_file("prod"))
    for key in set_keys(values, free=free):
        assert key in known, f"kube-prometheus-stack 88.5.3 has no values key {key}"
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    storage = spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]
    assert storage == {"storage": "200Gi"}
    for hidden in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[hidden] == {"enabled": False}  # GKE hides its control plane


def test_alertmanager_routes_to_the_webhook_only_when_configured() -> None:
    quiet = alertmanager_config(None)
    assert [r["name"] for r in quiet["receivers"]] == ["null"]
    paging = alertmanager_config("https://hooks.example.com/x")
    assert paging["receivers"][1]["webhook_configs"][0]["url"] == "https://hooks.example.com/x"
    assert paging["route"]["routes"][0]["receiver"] == "oncall"


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_dashboards_are_json_on_the_stack_datasource_with_known_metrics(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    dashboards = {name: json.loads(text) for name, text in all_dashboards(stack).items()}
    assert {"ray-default", "ray-serve", "ray-serve-deployment", "rayserve-overview"} <= set(
        dashboards
    )
    assert ("rayserve-gpu" in dashboards) is any(p.gpu_type for p in stack.node_pools)
    for name, dashboard in dashboards.items():
        assert dashboard["panels"], name
        for panel in dashboard["panels"]:
            datasource = panel.get("datasource")
            if name.startswith("ray-"):
                # Ray's panels use the `datasource` variable, of type prometheus.
                variables = {v["name"]: v for v in dashboard["templating"]["list"]}
                assert variables["datasource"]["query"] == "prometheus"
            elif panel.get("targets"):
                assert datasource == DATASOURCE, (name, panel["title"])
        for expr in _exprs(dashboard):
            names = metric_names(expr)
            if name.startswith("ray-"):
                assert all(n.startswith(RAY_PREFIXES) or n in KNOWN for n in names), expr
            else:
                assert names and names <= KNOWN, (name, expr, names - KNOWN)


def test_alert_rules_use_only_known_metrics() -> None:
    for stack_name in ("dev", "prod"):
        for group in rule_groups(load_stack_file(stack_name)):
            for rule in group["rules"]:
                assert metric_names(rule["expr"]) <= KNOWN, rule["alert"]


def test_metric_name_extraction_bites() -> None:
    assert metric_names('sum by (application) (rate(foo_total{a="b"}[5m])) / up') == {
        "foo_total",
        "up",
    }
    assert not metric_names("sum by (application) (rate(made_up_metric[5m]))") <= KNOWN


def test_overview_and_gpu_dashboards_cover_what_the_issue_asks() -> None:
    overview = {p["title"] for p in overview_dashboard(load_stack_file("dev"))["panels"]}
    for wanted in ("Requests/s", "5xx ratio", "p50 / p99", "replicas", "Queued", "Rejected",
                   "RayService ready", "head up", "utilisation vs allocation"):  # fmt: skip
        assert any(wanted in title for title in overview), wanted
    gpu = {p["title"] for p in gpu_dashboard()["panels"]}
    assert {"GPU utilisation per node", "GPU utilisation per Ray worker pod",
            "GPU memory used per node", "GPU memory used per Ray worker pod"} <= gpu  # fmt: skip


def test_ray_heads_get_the_grafana_and_prometheus_hosts() -> None:
    def head_env(monitoring: bool) -> dict[str, str]:
        objects = program_objects("dev", {"monitoring": monitoring})
        (rs,) = [o for o in objects if o["kind"] == "RayService"]
        container = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    env = head_env(True)
    assert env["RAY_GRAFANA_HOST"].startswith("http://kube-prometheus-stack-grafana.monitoring")
    assert env["RAY_PROMETHEUS_HOST"].startswith(
        "http://kube-prometheus-stack-prometheus.monitoring"
    )
    assert env["RAY_GRAFANA_IFRAME_HOST"]
    assert "RAY_GRAFANA_HOST" not in head_env(False)


@pytest.fixture(scope="module")
def dev_program() -> ProgramRun:
    return run_program("dev")


def test_operators_with_service_monitors_wait_for_the_prometheus_stack(
    dev_program: ProgramRun,
) -> None:
    run = dev_program
    kps = ("kubernetes:helm.sh/v3:Release", "rayserve-dev-kps")
    for component in ("rayserve-gke:ray:KubeRay", "rayserve-gke:gpu:GpuOperator"):
        assert kps in run.depends_on[(component, "rayserve-dev")], component
    (grafana_admin,) = [
        s for s in run.of_type("kubernetes:core/v1:Secret") if s.name.endswith("grafana-admin")
    ]
    assert is_secret(grafana_admin.inputs["stringData"])
    (release,) = [
        r for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.name == "rayserve-dev-kps"
    ]
    assert release.inputs["version"] == "88.5.3"


def test_monitoring_off_installs_no_prometheus_stack() -> None:
    run = run_program("dev", overrides={"monitoring": False})
    assert not [r for r in run.resources if r.type == "rayserve-gke:observability:Monitoring"]
    assert not [r for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.name.endswith("-kps")]
