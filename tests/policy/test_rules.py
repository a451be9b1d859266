"""The policy pack's rules, on passing and failing resources and on the real program."""

from __future__ import annotations

import ast
import copy
from typing import Any

import pytest

from infra.config import PROJECT_ROOT
from infra.program.runner import reveal, run_program
from policy.rules import (
    RULES,
    charts_have_versions,
    gcs_fault_tolerance,
    gpu_pools_tainted,
    images_pinned_by_digest,
    no_load_balancer_services,
    pod_security_restricted,
    production_disruption_controls,
    serve_auth_on,
)

RAYSERVICE = "kubernetes:ray.io/v1:RayService"
PROD = {"requireGcsFaultTolerance": True}


@pytest.fixture(scope="module")
def prod_rayservice() -> dict[str, Any]:
    run = run_program("prod")
    return dict(reveal(run.of_type(RAYSERVICE)[0].inputs))


def test_gcs_fault_tolerance(prod_rayservice: dict[str, Any]) -> None:
    assert gcs_fault_tolerance(RAYSERVICE, prod_rayservice, PROD) == []
    bare = copy.deepcopy(prod_rayservice)
    del bare["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert gcs_fault_tolerance(RAYSERVICE, bare, PROD)
    assert gcs_fault_tolerance(RAYSERVICE, bare, {}) == []  # dev may go without


def test_images_pinned_by_digest(prod_rayservice: dict[str, Any]) -> None:
    assert images_pinned_by_digest(RAYSERVICE, prod_rayservice, {}) == []
    tagged = copy.deepcopy(prod_rayservice)
    tagged["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"
    ] = "repo/app:latest"
    assert images_pinned_by_digest(RAYSERVICE, tagged, {}) == [
        "image 'repo/app:latest' is not pinned by digest (use repo@sha256:...)"
    ]


def test_charts_have_versions() -> None:
    release = "kubernetes:helm.sh/v3:Release"
    assert charts_have_versions(release, {"chart": "x", "version": "1.0.0"}, {}) == []
    assert charts_have_versions(release, {"chart": "x"}, {})
    assert charts_have_versions("kubernetes:helm.sh/v4:Chart", {"chart": "x", "version": ""}, {})


def test_no_load_balancer_services() -> None:
    service = "kubernetes:core/v1:Service"
    assert no_load_balancer_services(service, {"spec": {"type": "ClusterIP"}}, {}) == []
    assert no_load_balancer_services(service, {"spec": {}}, {}) == []
    assert no_load_balancer_services(service, {"spec": {"type": "LoadBalancer"}}, {})
    assert no_load_balancer_services(service, {"spec": {"type": "NodePort"}}, {})


def test_gpu_pools_tainted() -> None:
    pool = "gcp:container/nodePool:NodePool"
    gpu = {"nodeConfig": {"guestAccelerators": [{"type": "nvidia-l4", "count": 1}],
                          "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]}}  # fmt: skip
    assert gpu_pools_tainted(pool, gpu, {}) == []
    untainted = copy.deepcopy(gpu)
    untainted["nodeConfig"]["taints"] = []
    assert gpu_pools_tainted(pool, untainted, {})
    assert gpu_pools_tainted(pool, {"nodeConfig": {"machineType": "e2-standard-8"}}, {}) == []


def test_serve_auth_on(prod_rayservice: dict[str, Any]) -> None:
    assert serve_auth_on(RAYSERVICE, prod_rayservice, {}) == []
    open_door = copy.deepcopy(prod_rayservice)
    worker = open_door["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"
    ][0]
    worker["env"] = [
        e for e in worker["env"] if e["name"] != "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
    ]
    assert serve_auth_on(RAYSERVICE, open_door, {}) == [
        "ray-worker: Serve does not load the API-key middleware"
    ]
    grpc = copy.deepcopy(prod_rayservice)
    grpc["spec"]["serveConfigV2"] += "grpc_options:\n  port: 9000\n"
    assert serve_auth_on(RAYSERVICE, grpc, {}) == [
        "serveConfigV2: gRPC ingress is not covered by the API-key middleware"
    ]


def _restricted_pod(**pod: Any) -> dict[str, Any]:
    """A Deployment's pod whose one container meets every check of the rule."""
    container = {
        "name": "app",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}},
    }
    spec = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        **pod,
    }
    return {"spec": {"template": {"spec": spec}}}


def test_pod_security_restricted_on_workloads() -> None:
    deployment = "kubernetes:apps/v1:Deployment"
    good = _restricted_pod()
    assert pod_security_restricted(deployment, good, {}) == []
    # Pod-level runAsNonRoot and seccomp count for every container; a container's own
    # setting overrides them.
    root = copy.deepcopy(good)
    container = root["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["runAsNonRoot"] = False
    assert pod_security_restricted(deployment, root, {}) == [
        "pod: container 'app' runAsNonRoot is not true"
    ]
    loose = copy.deepcopy(good)
    pod = loose["spec"]["template"]["spec"]
    del pod["securityContext"]["seccompProfile"]
    pod["hostNetwork"] = True
    container = pod["containers"][0]
    container["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    del container["resources"]["limits"]
    assert pod_security_restricted(deployment, loose, {}) == [
        "pod: shares the node's namespaces (hostNetwork)",
        "pod: container 'app' allowPrivilegeEscalation is not false",
        "pod: container 'app' is privileged",
        "pod: container 'app' does not drop ALL capabilities",
        "pod: container 'app' adds capabilities",
        "pod: container 'app' has no RuntimeDefault seccomp profile",
        "pod: container 'app' root filesystem is writable",
        "pod: container 'app' has no memory limit",
    ]
    # Init containers count; a CronJob's pod is two templates down.
    init = _restricted_pod(initContainers=[{"name": "init", "image": "busybox"}])
    assert "pod: container 'init' has no CPU request" in pod_security_restricted(
        deployment, init, {}
    )
    cron = {"spec": {"jobTemplate": copy.deepcopy(init)}}
    assert pod_security_restricted("kubernetes:batch/v1:CronJob", cron, {}) == (
        pod_security_restricted(deployment, init, {})
    )
    # Kinds without pods are not its business.
    assert pod_security_restricted("kubernetes:core/v1:Service", {"spec": {}}, {}) == []


def test_pod_security_restricted_on_rayservices(prod_rayservice: dict[str, Any]) -> None:
    assert pod_security_restricted(RAYSERVICE, prod_rayservice, {}) == []
    open_pod = copy.deepcopy(prod_rayservice)
    cluster = open_pod["spec"]["rayClusterConfig"]
    worker = cluster["workerGroupSpecs"][0]
    del worker["template"]["spec"]["containers"][0]["securityContext"]
    del cluster["autoscalerOptions"]["resources"]
    group = f"worker group '{worker['groupName']}'"
    assert pod_security_restricted(RAYSERVICE, open_pod, {}) == [
        "head pod: container 'autoscaler' has no CPU request",
        "head pod: container 'autoscaler' has no memory limit",
        f"{group}: container 'ray-worker' allowPrivilegeEscalation is not false",
        f"{group}: container 'ray-worker' does not drop ALL capabilities",
        f"{group}: container 'ray-worker' root filesystem is writable",
    ]  # the pod's runAsNonRoot and seccomp still hold for the container
    cluster["enableInTreeAutoscaling"] = False  # no sidecar, nothing to check for it
    assert not any("autoscaler" in p for p in pod_security_restricted(RAYSERVICE, open_pod, {}))


@pytest.mark.parametrize(("stack", "config"), [("dev", {}), ("prod", PROD)])
def test_every_resource_of_the_program_passes_every_rule(
    stack: str, config: dict[str, Any]
) -> None:
    run = run_program(stack)
    for resource in run.resources:
        props = reveal(resource.inputs)
        for rule in RULES:
            assert rule.check(resource.type, props, config) == [], (
                rule.name,
                resource.type,
                resource.name,
            )


def test_the_pack_registers_every_rule() -> None:
    tree = ast.parse((PROJECT_ROOT / "policy" / "__main__.py").read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PolicyPack"
    ]
    (pack,) = calls
    assert "RULES" in ast.unparse(pack)
    assert len({rule.name for rule in RULES}) == len(RULES) == 7


def _ray_pod(priority: str | None, component: str) -> dict:
    spec = {"priorityClassName": priority} if priority else {}
    return {"template": {"metadata": {"labels": {"app": "x", "role": component}}, "spec": spec}}


def _stack(*, head_budget: int | None = 0, window: bool = True, surge: int = 1) -> list:
    rayservice = {
        "metadata": {"name": "svc", "namespace": "ray"},
        "spec": {"rayClusterConfig": {
            "headGroupSpec": _ray_pod("pc-head", "head"),
            "workerGroupSpecs": [{"groupName": "cpu", **_ray_pod("pc-worker", "worker")}],
        }},
    }  # fmt: skip
    budgets = [
        ("kubernetes:policy/v1:PodDisruptionBudget", {
            "metadata": {"namespace": "ray"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"role": "worker"}}},
        }),
    ]  # fmt: skip
    if head_budget is not None:
        budgets.append(("kubernetes:policy/v1:PodDisruptionBudget", {
            "metadata": {"namespace": "ray"},
            "spec": {"maxUnavailable": head_budget, "selector": {"matchLabels": {"role": "head"}}},
        }))  # fmt: skip
    return [
        ("kubernetes:ray.io/v1:RayService", rayservice),
        *budgets,
        ("kubernetes:scheduling.k8s.io/v1:PriorityClass", {"metadata": {"name": "pc-head"}}),
        ("kubernetes:scheduling.k8s.io/v1:PriorityClass", {"metadata": {"name": "pc-worker"}}),
        ("gcp:container/cluster:Cluster",
         {"maintenancePolicy": {"recurringWindow": {"recurrence": "FREQ=WEEKLY"}}} if window else {}),
        ("gcp:container/nodePool:NodePool", {
            "name": "cpu", "management": {"autoUpgrade": True},
            "upgradeSettings": {"strategy": "SURGE", "maxSurge": surge},
        }),
    ]  # fmt: skip


REQUIRED = {"requireDisruptionControls": True}


def test_disruption_controls_pass_a_complete_stack_and_name_each_gap() -> None:
    assert production_disruption_controls(_stack(), REQUIRED) == []
    assert production_disruption_controls(_stack(head_budget=None, window=False), {}) == []
    assert production_disruption_controls(_stack(head_budget=1), REQUIRED) == [
        "RayService svc: the head's PodDisruptionBudget allows evictions"
    ]
    assert production_disruption_controls(_stack(head_budget=None), REQUIRED) == [
        "RayService svc: no PodDisruptionBudget selects its head pods"
    ]
    assert production_disruption_controls(_stack(window=False, surge=0), REQUIRED) == [
        "the GKE cluster has no maintenance window: upgrades may come any time",
        "node pool cpu: upgrades take nodes down before new ones join (maxSurge 0)",
    ]
