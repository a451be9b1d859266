"""Monitoring: monitors, the Prometheus stack's values and release, Ray's metrics tab."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.config.sources import load_stack_file
from infra.observability.monitoring import kps_values, monitoring_objects, pod_monitors
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
    assert {r["targetLabel"] for r in relabel} == {"ray_io_cluster", "ray_node_type", "rayservice"}


def test_ray_head_declares_every_port_the_monitors_scrape() -> None:
    (rayservice,) = [o for o in program_objects("dev") if o["kind"] == "RayService"]
    cluster = rayservice["spec"]["rayClusterConfig"]
    head_ports = {
        p["name"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {"metrics", "as-metrics", "dash-metrics"} <= head_ports
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "metrics" in {p["name"] for p in worker["ports"]}


KPS_DIR = REFERENCE_DIR / "kube-prometheus-stack-88.5.3"
# The subcharts' own values.yaml files are not in the reference: the keys we set under
# them, transcribed from those charts at the versions kps 88.5.3 pins (checked below),
# so a chart bump makes this test ask for a fresh look.
SUBCHART_VERSIONS = {"grafana": "12.11.1", "kube-state-metrics": "8.4.0",
                     "prometheus-node-exporter": "4.56.1"}  # fmt: skip
SUBCHART_KEYS = {
    "grafana.nodeSelector", "grafana.resources", "grafana.securityContext",
    "grafana.containerSecurityContext", "grafana.sidecar.resources",
    "grafana.sidecar.securityContext", "grafana.grafana.ini",
    "kube-state-metrics.nodeSelector", "kube-state-metrics.resources",
    "kube-state-metrics.securityContext", "kube-state-metrics.containerSecurityContext",
    "kube-state-metrics.metricLabelsAllowlist",
    "prometheus-node-exporter.resources", "prometheus-node-exporter.securityContext",
    "prometheus-node-exporter.containerSecurityContext",
}  # fmt: skip
# Keys whose values are Kubernetes objects or Grafana's own ini (validated elsewhere).
OBJECT_KEYS = ("nodeSelector", "resources", "securityContext", "containerSecurityContext",
               "storageSpec", "grafana.ini", "disabled")  # fmt: skip


def test_kps_values_keys_exist_in_the_pinned_chart() -> None:
    chart = yaml.safe_load((KPS_DIR / "Chart.yaml").read_text())
    pinned = {
        d["name"]: d["version"] for d in chart["dependencies"] if d["name"] in SUBCHART_VERSIONS
    }
    assert pinned == SUBCHART_VERSIONS, (
        "kube-prometheus-stack's subcharts moved: re-check SUBCHART_KEYS"
    )
    known = values_keys(KPS_DIR / "values.yaml") | SUBCHART_KEYS
    values = kps_values(load_stack_file("prod"))
    keys = set_keys(values)
    free = tuple(
        k for k in keys if k.rsplit(".", 1)[-1] in OBJECT_KEYS or k.endswith(".grafana.ini")
    )
    for key in set_keys(values, free=free):
        assert key in known, f"kube-prometheus-stack 88.5.3 has no values key {key}"
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["retention"] == "30d"
    storage = spec["storageSpec"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]
    assert storage == {"storage": "200Gi"}
    for hidden in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[hidden] == {"enabled": False}  # GKE hides its control plane


def _components(values: dict[str, Any]) -> dict[str, tuple[Any, list[Any], list[Any]]]:
    """Each component's (pod securityContext, container securityContexts, resources);
    None where the operator sets the container context itself."""
    operator = values["prometheusOperator"]
    webhook = operator["admissionWebhooks"]
    grafana = values["grafana"]
    ksm = values["kube-state-metrics"]
    exporter = values["prometheus-node-exporter"]
    return {
        "prometheus-operator": (operator["securityContext"],
                                [operator["containerSecurityContext"]],
                                [operator["resources"],
                                 operator["prometheusConfigReloader"]["resources"]]),
        "admission-webhook-jobs": (webhook["patch"]["securityContext"],
                                   [webhook["createSecretJob"]["securityContext"],
                                    webhook["patchWebhookJob"]["securityContext"]],
                                   [webhook["patch"]["resources"]]),
        "prometheus": (values["prometheus"]["prometheusSpec"]["securityContext"], [None],
                       [values["prometheus"]["prometheusSpec"]["resources"]]),
        "alertmanager": (values["alertmanager"]["alertmanagerSpec"]["securityContext"], [None],
                         [values["alertmanager"]["alertmanagerSpec"]["resources"]]),
        "grafana": (grafana["securityContext"],
                    [grafana["containerSecurityContext"], grafana["sidecar"]["securityContext"]],
                    [grafana["resources"], grafana["sidecar"]["resources"]]),
        "kube-state-metrics": (ksm["securityContext"], [ksm["containerSecurityContext"]],
                               [ksm["resources"]]),
        "node-exporter": (exporter["securityContext"], [exporter["containerSecurityContext"]],
                          [exporter["resources"]]),
    }  # fmt: skip


# Grafana writes its database, plugins and temporary files outside the chart's volumes.
WRITABLE_ROOT = {"grafana"}


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_every_component_runs_restricted_with_requests_and_a_memory_limit(stack_name: str) -> None:
    components = _components(kps_values(load_stack_file(stack_name)))
    assert len(components) == 7
    for name, (pod, containers, resources) in components.items():
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers:
            if container is None:  # the operator writes Prometheus'/Alertmanager's own
                continue
            assert container["allowPrivilegeEscalation"] is False, name
            assert container["privileged"] is False, name
            assert container["capabilities"] == {"drop": ["ALL"]}, name
            assert container["readOnlyRootFilesystem"] is (name not in WRITABLE_ROOT), name
        for resource in resources:
            assert set(resource["requests"]) == {"cpu", "memory"}, name
            assert set(resource["limits"]) == {"memory"}, name
        # The same settings as Kubernetes reads them: a pod that carries them validates.
        pod_object = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"securityContext": pod, "containers": [
                {"name": f"c{i}", "image": "x", "resources": resources[0],
                 **({"securityContext": c} if c else {})}
                for i, c in enumerate(containers)]},
        }  # fmt: skip
        assert validation_errors(pod_object) == [], name


def test_a_loosened_security_context_fails_validation() -> None:
    pod, (container, *_), _ = _components(kps_values(load_stack_file("dev")))["grafana"]
    bad = {**container, "allowPrivilegeEscalation": "no"}
    pod_object = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                  "spec": {"securityContext": pod, "containers": [
                      {"name": "c", "image": "x", "securityContext": bad}]}}  # fmt: skip
    assert validation_errors(pod_object)


def test_pending_ray_pods_can_be_named_by_rayservice_and_group() -> None:
    values = kps_values(load_stack_file("dev"))
    allow = values["kube-state-metrics"]["metricLabelsAllowlist"]
    assert allow == ["pods=[app.kubernetes.io/instance,ray.io/group]"]
    assert values["defaultRules"]["disabled"] == {
        "TargetDown": True,
        "PrometheusRuleFailures": True,
    }


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
