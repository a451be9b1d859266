"""Guardrails as plain functions: (resource type, inputs, config) -> violations.

`policy/__main__.py` registers each with pulumi-policy; tests call them directly on
passing and failing resources and on every resource the real program declares.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAYSERVICE = "kubernetes:ray.io/v1:RayService"
NODE_POOL = "gcp:container/nodePool:NodePool"
SERVICE = "kubernetes:core/v1:Service"
CHARTS = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
PROXY_CALLBACK = "serve_apps.auth.middleware:proxy_middlewares"


def _walk(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        # Sequence, not list: the policy pack hands lists over as its own proxy type.
        for item in value:
            yield from _walk(item)


def _containers(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    cluster = props.get("spec", {}).get("rayClusterConfig", {})
    templates = [cluster.get("headGroupSpec", {}).get("template", {})]
    templates += [g.get("template", {}) for g in cluster.get("workerGroupSpecs", [])]
    return [c for t in templates for c in t.get("spec", {}).get("containers", [])]


def gcs_fault_tolerance(
    kind: str, props: Mapping[str, Any], config: Mapping[str, Any]
) -> list[str]:
    if kind != RAYSERVICE or not config.get("requireGcsFaultTolerance", False):
        return []
    options = props.get("spec", {}).get("rayClusterConfig", {}).get("gcsFaultToleranceOptions")
    if not options or not options.get("redisAddress"):
        return ["a production RayService needs gcsFaultToleranceOptions with a Redis address"]
    return []


# Images the pinned charts deploy by tag, reviewed per chart version (a Helm v4 Chart
# registers each object it renders, so the KubeRay operator's Deployment reaches us).
REVIEWED_CHART_IMAGES: dict[str, list[str]] = {
    key: images
    for key, images in json.loads(
        (Path(__file__).resolve().parent / "chart_images.json").read_text(encoding="utf-8")
    ).items()
    if not key.startswith("_")
}
_REVIEWED = frozenset(image for images in REVIEWED_CHART_IMAGES.values() for image in images)


def images_pinned_by_digest(
    kind: str, props: Mapping[str, Any], config: Mapping[str, Any]
) -> list[str]:
    del config
    if kind in CHARTS:
        release = f"{props.get('chart')} {props.get('version')}"
        if release not in REVIEWED_CHART_IMAGES:
            return [f"chart {release}: its images are not reviewed (policy/chart_images.json)"]
        return []
    return [
        f"image '{node['image']}' is not pinned by digest (use repo@sha256:...)"
        for node in _walk(props)
        if isinstance(node.get("image"), str)
        and "@sha256:" not in node["image"]
        and node["image"] not in _REVIEWED
    ]


def charts_have_versions(
    kind: str, props: Mapping[str, Any], config: Mapping[str, Any]
) -> list[str]:
    del config
    if kind in CHARTS and not props.get("version"):
        return [f"chart '{props.get('chart')}' has no pinned version"]
    return []


def no_load_balancer_services(
    kind: str, props: Mapping[str, Any], config: Mapping[str, Any]
) -> list[str]:
    del config
    if kind == SERVICE and props.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
        return ["Services are ClusterIP: the Gateway is the only way in"]
    return []


def gpu_pools_tainted(kind: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    del config
    node_config = props.get("nodeConfig", {})
    if kind != NODE_POOL or not node_config.get("guestAccelerators"):
        return []
    taints = node_config.get("taints") or []
    wanted = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
    if not any(all(t.get(k) == v for k, v in wanted.items()) for t in taints):
        return ["GPU node pools carry the taint nvidia.com/gpu=present:NoSchedule"]
    return []


def serve_auth_on(kind: str, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    del config
    if kind != RAYSERVICE:
        return []
    problems = []
    for container in _containers(props):
        if container.get("name") not in ("ray-head", "ray-worker"):
            continue
        env = {e.get("name"): e.get("value") for e in container.get("env", [])}
        if env.get("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH") != PROXY_CALLBACK:
            problems.append(f"{container.get('name')}: Serve does not load the API-key middleware")
    # Serve applies the middleware to HTTP only: a gRPC ingress would take requests
    # without a key (the serve config is YAML text; the key anywhere in it counts).
    if "grpc_options" in str(props.get("spec", {}).get("serveConfigV2", "")):
        problems.append("serveConfigV2: gRPC ingress is not covered by the API-key middleware")
    return problems


# Where each kind the program may write keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:core/v1:Pod": ("spec",),
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:ReplicaSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
RAYCLUSTER = "kubernetes:ray.io/v1:RayCluster"
SECCOMP_TYPES = ("RuntimeDefault", "Localhost")


def _at(props: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    node: Any = props
    for key in path:
        node = node.get(key) or {}
    return node


def _pod_containers(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _pod_specs(
    kind: str, props: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any], list[Mapping[str, Any]]]]:
    """(where, pod spec, containers) of every pod a resource makes; KubeRay's autoscaler
    sidecar is the head pod's, built from `autoscalerOptions`."""
    if kind in POD_SPEC_PATHS:
        spec = _at(props, POD_SPEC_PATHS[kind])
        return [("pod", spec, _pod_containers(spec))]
    if kind not in (RAYSERVICE, RAYCLUSTER):
        return []
    cluster = _at(props, ("spec", "rayClusterConfig") if kind == RAYSERVICE else ("spec",))
    head = _at(cluster, ("headGroupSpec", "template", "spec"))
    head_containers = _pod_containers(head)
    if cluster.get("enableInTreeAutoscaling"):
        options = cluster.get("autoscalerOptions") or {}
        head_containers.append(
            {
                "name": "autoscaler",
                "securityContext": options.get("securityContext"),
                "resources": options.get("resources"),
            }
        )
    pods = [("head pod", head, head_containers)]
    for group in cluster.get("workerGroupSpecs") or []:
        spec = _at(group, ("template", "spec"))
        pods.append((f"worker group '{group.get('groupName')}'", spec, _pod_containers(spec)))
    return pods


def _container_problems(container: Mapping[str, Any], pod_context: Mapping[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}

    def effective(key: str) -> Any:  # a container's setting overrides its pod's
        value = context.get(key)
        return pod_context.get(key) if value is None else value

    problems = []
    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if context.get("privileged"):
        problems.append("is privileged")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("does not drop ALL capabilities")
    if any(c != "NET_BIND_SERVICE" for c in capabilities.get("add") or []):
        problems.append("adds capabilities")
    if (effective("seccompProfile") or {}).get("type") not in SECCOMP_TYPES:
        problems.append("has no RuntimeDefault seccomp profile")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("root filesystem is writable")
    resources = container.get("resources") or {}
    if not (resources.get("requests") or {}).get("cpu"):
        problems.append("has no CPU request")
    if not (resources.get("limits") or {}).get("memory"):
        problems.append("has no memory limit")
    return problems


def pod_security_restricted(
    kind: str, props: Mapping[str, Any], config: Mapping[str, Any]
) -> list[str]:
    del config
    problems = []
    for where, spec, containers in _pod_specs(kind, props):
        shared = [key for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
        if shared:
            problems.append(f"{where}: shares the node's namespaces ({', '.join(shared)})")
        pod_context = spec.get("securityContext") or {}
        for container in containers:
            name = container.get("name")
            problems += [
                f"{where}: container '{name}' {problem}"
                for problem in _container_problems(container, pod_context)
            ]
    return problems


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[str, Mapping[str, Any], Mapping[str, Any]], list[str]]


RULES = [
    Rule(
        "gcs-fault-tolerance",
        "Production RayServices keep GCS state in Redis.",
        gcs_fault_tolerance,
    ),
    Rule(
        "images-pinned-by-digest", "Every image is referenced by digest.", images_pinned_by_digest
    ),
    Rule("charts-have-versions", "Every Helm chart is pinned to a version.", charts_have_versions),
    Rule(
        "no-load-balancer-services",
        "No LoadBalancer/NodePort Service besides the Gateway.",
        no_load_balancer_services,
    ),
    Rule(
        "gpu-pools-tainted", "GPU node pools are tainted for GPU workloads only.", gpu_pools_tainted
    ),
    Rule("serve-auth-on", "Serve checks API keys on every Ray pod.", serve_auth_on),
    Rule(
        "pod-security-restricted",
        "Every container runs non-root, without privilege escalation or capabilities, with "
        "the runtime's seccomp profile, a read-only root filesystem, a CPU request and a "
        "memory limit.",
        pod_security_restricted,
    ),
]


PDB = "kubernetes:policy/v1:PodDisruptionBudget"
PRIORITY_CLASS = "kubernetes:scheduling.k8s.io/v1:PriorityClass"
CLUSTER = "gcp:container/cluster:Cluster"
StackResource = tuple[str, Mapping[str, Any]]  # (type, props)


def _selects(budget: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    wanted = budget.get("spec", {}).get("selector", {}).get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _rayservice_disruption_problems(
    name: str, props: Mapping[str, Any], budgets: list[Mapping[str, Any]], classes: set[str]
) -> list[str]:
    namespace = props.get("metadata", {}).get("namespace")
    cluster = props.get("spec", {}).get("rayClusterConfig", {})
    pods = [("head", cluster.get("headGroupSpec", {}))]
    pods += [
        (f"worker group '{g.get('groupName')}'", g) for g in cluster.get("workerGroupSpecs", [])
    ]
    problems = []
    for what, group in pods:
        template = group.get("template", {})
        labels = template.get("metadata", {}).get("labels", {})
        priority = template.get("spec", {}).get("priorityClassName")
        if priority not in classes:
            problems.append(f"RayService {name}: {what} pods have no PriorityClass of this stack")
        covering = [
            b for b in budgets
            if b.get("metadata", {}).get("namespace") == namespace and _selects(b, labels)
        ]  # fmt: skip
        if not covering:
            problems.append(f"RayService {name}: no PodDisruptionBudget selects its {what} pods")
        elif what == "head" and all(b["spec"].get("maxUnavailable") != 0 for b in covering):
            problems.append(f"RayService {name}: the head's PodDisruptionBudget allows evictions")
    return problems


def production_disruption_controls(
    resources: Sequence[StackResource], config: Mapping[str, Any]
) -> list[str]:
    """A production stack keeps Ray serving through node auto-upgrades: Ray pods carry
    PriorityClasses and PodDisruptionBudgets (heads never evicted), and GKE upgrades only
    in a maintenance window, by surge."""
    if not config.get("requireDisruptionControls", False):
        return []
    budgets = [props for kind, props in resources if kind == PDB]
    classes = {
        props.get("metadata", {}).get("name") for kind, props in resources if kind == PRIORITY_CLASS
    }
    problems = []
    for kind, props in resources:
        if kind == RAYSERVICE:
            name = props.get("metadata", {}).get("name", "?")
            problems += _rayservice_disruption_problems(name, props, budgets, classes)
        elif kind == CLUSTER:
            policy = props.get("maintenancePolicy") or {}
            if not (policy.get("recurringWindow") or policy.get("dailyMaintenanceWindow")):
                problems.append(
                    "the GKE cluster has no maintenance window: upgrades may come any time"
                )
        elif kind == NODE_POOL:
            upgrades = props.get("upgradeSettings") or {}
            pool = props.get("name", "?")
            if not (props.get("management") or {}).get("autoUpgrade"):
                problems.append(
                    f"node pool {pool}: auto-upgrade is off (security patches never land)"
                )
            if upgrades.get("strategy", "SURGE") == "SURGE" and not upgrades.get("maxSurge"):
                problems.append(
                    f"node pool {pool}: upgrades take nodes down before new ones join (maxSurge 0)"
                )
    return problems


@dataclass(frozen=True)
class StackRule:
    name: str
    description: str
    check: Callable[[Sequence[StackResource], Mapping[str, Any]], list[str]]
    config_key: str


STACK_RULES = [
    StackRule(
        "production-disruption-controls",
        "Production Ray pods have PriorityClasses and PodDisruptionBudgets; GKE upgrades in a "
        "maintenance window, by surge.",
        production_disruption_controls,
        "requireDisruptionControls",
    ),
]
