"""Monitoring: monitors, the Prometheus stack's values and release, Ray's metrics tab."""

from __future__ import annotations

import pytest

from infra.config.sources import load_stack_file
from infra.observability.monitoring import (
    alertmanager_config,
    kps_values,
    monitoring_objects,
    pod_monitors,
)
from infra.program.render import program_objects
from infra.program.runner import ProgramRun, is_secret, run_program
from tests.k8s_schemas import REFERENCE_DIR, set_keys, validation_errors, values_keys


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
