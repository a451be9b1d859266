"""Every namespace the stack creates denies by default; the policies open exactly the
intended flows, checked by evaluating NetworkPolicy semantics over real pod labels."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from infra.config import StackConfig
from infra.config.sources import load_stack_file
from infra.constants import GPU_OPERATOR_NAMESPACE, MONITORING_NAMESPACE
from infra.edge.network_policies import network_policies, stack_namespaces
from infra.kuberay import operator_namespace
from infra.program.render import program_objects
from infra.program.runner import ProgramRun, run_program
from infra.redis import in_cluster_manifests
from tests.infra.helpers import STACKS
from tests.k8s_schemas import validation_errors

NAMESPACE_NAME = "kubernetes.io/metadata.name"

# -- a NetworkPolicy evaluator -----------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class Host:
    """An address outside any pod: a load balancer, the API server, the internet."""

    ip: str


Endpoint = Pod | Host


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, endpoint: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(endpoint, Host):
            return False  # pods are selected by labels, never by address here
        ip = ipaddress.ip_address(endpoint.ip)
        block = peer["ipBlock"]
        excluded = any(ip in ipaddress.ip_network(c) for c in block.get("except", []))
        return ip in ipaddress.ip_network(block["cidr"]) and not excluded
    if not isinstance(endpoint, Pod):
        return False
    if "namespaceSelector" in peer:
        namespace_ok = selects(peer["namespaceSelector"], {NAMESPACE_NAME: endpoint.namespace})
    else:
        namespace_ok = endpoint.namespace == policy_namespace
    return namespace_ok and selects(peer.get("podSelector", {}), endpoint.labels)


def port_matches(ports: list[Mapping[str, Any]], port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        low = entry.get("port")
        if low is None or low == port or low <= port <= entry.get("endPort", low):
            return True
    return False


def side_allows(
    policies: list[dict[str, Any]],
    pod: Pod,
    direction: str,
    other: Endpoint,
    port: int,
    protocol: str,
) -> bool:
    """Whether the pod's own namespace lets this flow out (Egress) or in (Ingress)."""
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    isolating = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and direction in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not isolating:
        return True  # not isolated in this direction
    for policy in isolating:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if peers is not None and not any(
                peer_matches(peer, pod.namespace, other) for peer in peers
            ):
                continue
            if port_matches(rule.get("ports", []), port, protocol):
                return True
    return False


def allowed(
    policies: list[dict[str, Any]],
    source: Endpoint,
    target: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """A connection happens iff the source's egress and the target's ingress allow it."""
    out = not isinstance(source, Pod) or side_allows(
        policies, source, "Egress", target, port, protocol
    )
    into = not isinstance(target, Pod) or side_allows(
        policies, target, "Ingress", source, port, protocol
    )
    return out and into


# -- the pods, as the cluster labels them ------------------------------------------------


def kuberay_pod_labels(
    template: Mapping[str, str], cluster: str, node_type: str, group: str
) -> dict[str, str]:
    """KubeRay's labelPod: its labels, then the template's, except that `ray.io/cluster`,
    `ray.io/node-type` and `ray.io/group` cannot be overridden."""
    labels = {
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
        "ray.io/identifier": f"{cluster}-{node_type}",
        **template,
    }
    labels.update({"ray.io/cluster": cluster, "ray.io/node-type": node_type, "ray.io/group": group})
    return labels


def world(stack: StackConfig, objects: list[dict[str, Any]]) -> dict[str, Endpoint]:
    """Named endpoints: every service's Ray pods (labels from the program's own
    RayService templates), its Redis, the platform's pods, and outside addresses."""
    ns = stack.namespace
    pods: dict[str, Endpoint] = {}
    for rayservice in (o for o in objects if o["kind"] == "RayService"):
        service = rayservice["metadata"]["name"]
        cluster = rayservice["spec"]["rayClusterConfig"]
        cluster_name = f"{service}-x7k2p"  # KubeRay: <RayService>-<5 random characters>
        head = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
        pods[f"{service}/head"] = Pod(
            ns, kuberay_pod_labels(head, cluster_name, "head", "headgroup")
        )
        pods[f"{service}/cleanup"] = Pod(
            ns, kuberay_pod_labels(head, cluster_name, "redis-cleanup", "headgroup")
        )
        for index, group in enumerate(cluster["workerGroupSpecs"]):
            labels = group["template"]["metadata"]["labels"]
            for replica in ("a", "b"):
                pods[f"{service}/worker{index}{replica}"] = Pod(
                    ns, kuberay_pod_labels(labels, cluster_name, "worker", group["groupName"])
                )
        # Any pod in the namespace may copy our labels; it gets none of KubeRay's.
        pods[f"{service}/imposter"] = Pod(ns, dict(head))
        redis_pod = in_cluster_manifests(stack, service)[1]["spec"]["template"]["metadata"]
        pods[f"{service}/redis"] = Pod(ns, redis_pod["labels"])
    monitoring = {
        "prometheus": {"app.kubernetes.io/name": "prometheus"},
        "grafana": {"app.kubernetes.io/name": "grafana"},
        "alertmanager": {"app.kubernetes.io/name": "alertmanager"},
        "kube-state-metrics": {"app.kubernetes.io/name": "kube-state-metrics"},
    }
    pods |= {name: Pod(MONITORING_NAMESPACE, labels) for name, labels in monitoring.items()}
    pods |= {
        "kuberay-operator": Pod(
            operator_namespace(stack),
            {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "x"},
        ),
        "kube-dns": Pod("kube-system", {"k8s-app": "kube-dns"}),
        "dcgm-exporter": Pod(GPU_OPERATOR_NAMESPACE, {"app": "nvidia-dcgm-exporter"}),
        "gpu-driver": Pod(GPU_OPERATOR_NAMESPACE, {"app": "nvidia-driver-daemonset"}),
        "load-balancer": Host("35.191.10.1"),
        "health-checker": Host("130.211.0.7"),
        "regional-proxy": Host("10.129.0.5"),
        "api-server": Host("172.16.0.2"),  # in masterCidr
        "internet": Host("151.101.1.1"),
        "node": Host("10.10.0.5"),
        "metadata-server": Host("169.254.169.254"),
        "memorystore": Host("10.1.2.3"),  # the mocked instance's IP
        "other-memorystore": Host("10.1.9.9"),
    }
    return pods


def _objects(stack_name: str, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    return program_objects(stack_name, overrides)


def _policies(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


# (source, target, port, protocol, allowed) for the dev stack: one service, in-cluster
# Redis, a GPU pool. `svc` is the service's name.
DEV_FLOWS = [
    # Inside one Ray cluster: GCS, client, object manager, HAProxy -> replica ports.
    ("svc/worker0a", "svc/head", 6379, "TCP", True),
    ("svc/worker0a", "svc/head", 10001, "TCP", True),
    ("svc/worker0a", "svc/worker0b", 30500, "TCP", True),
    ("svc/head", "svc/worker0a", 52365, "TCP", True),
    # A pod wearing our labels but not KubeRay's is no Ray node.
    ("svc/imposter", "svc/head", 6379, "TCP", False),
    ("svc/imposter", "svc/redis", 6379, "TCP", False),
    ("svc/worker0a", "svc/imposter", 8000, "TCP", False),
    # Redis: the head and KubeRay's cleanup Job only; the exporter from Prometheus.
    ("svc/head", "svc/redis", 6379, "TCP", True),
    ("svc/cleanup", "svc/redis", 6379, "TCP", True),
    ("svc/worker0a", "svc/redis", 6379, "TCP", False),
    ("kuberay-operator", "svc/redis", 6379, "TCP", False),
    ("prometheus", "svc/redis", 9121, "TCP", True),
    ("prometheus", "svc/redis", 6379, "TCP", False),
    ("svc/redis", "internet", 443, "TCP", False),
    ("svc/redis", "kube-dns", 53, "UDP", False),
    # The edge: Serve on workers, dashboards on heads, nothing else.
    ("load-balancer", "svc/worker0a", 8000, "TCP", True),
    ("health-checker", "svc/worker0a", 8000, "TCP", True),
    ("load-balancer", "svc/head", 8265, "TCP", True),
    ("load-balancer", "svc/head", 6379, "TCP", False),
    ("load-balancer", "svc/head", 10001, "TCP", False),
    ("load-balancer", "svc/worker0a", 30500, "TCP", False),
    ("load-balancer", "svc/redis", 6379, "TCP", False),
    ("regional-proxy", "svc/worker0a", 8000, "TCP", False),  # global class: no proxies
    ("load-balancer", "grafana", 3000, "TCP", True),
    ("load-balancer", "prometheus", 9090, "TCP", False),
    ("load-balancer", "alertmanager", 9093, "TCP", False),
    # The operator: dashboards and Serve, the API server; nothing else.
    ("kuberay-operator", "svc/head", 8265, "TCP", True),
    ("kuberay-operator", "svc/worker0a", 8000, "TCP", True),
    ("kuberay-operator", "svc/head", 6379, "TCP", False),
    ("kuberay-operator", "api-server", 443, "TCP", True),
    ("kuberay-operator", "kube-dns", 53, "UDP", True),
    ("kuberay-operator", "internet", 443, "TCP", False),
    # Model code (workers) reaches nothing outside its cluster and kube-dns.
    ("svc/worker0a", "kube-dns", 53, "UDP", True),
    ("svc/worker0a", "kube-dns", 53, "TCP", True),
    ("svc/worker0a", "grafana", 3000, "TCP", False),
    ("svc/worker0a", "prometheus", 9090, "TCP", False),
    ("svc/worker0a", "alertmanager", 9093, "TCP", False),
    ("svc/worker0a", "kube-state-metrics", 8080, "TCP", False),
    ("svc/worker0a", "kuberay-operator", 8080, "TCP", False),
    ("svc/worker0a", "api-server", 443, "TCP", False),
    ("svc/worker0a", "internet", 443, "TCP", False),
    ("svc/worker0a", "metadata-server", 80, "TCP", False),
    ("svc/worker0a", "node", 10250, "TCP", False),
    ("svc/worker0a", "dcgm-exporter", 9400, "TCP", False),
    # The head: the autoscaler's API calls, the dashboard's metrics tab.
    ("svc/head", "api-server", 443, "TCP", True),
    ("svc/head", "prometheus", 9090, "TCP", True),
    ("svc/head", "grafana", 3000, "TCP", True),
    ("svc/head", "alertmanager", 9093, "TCP", False),
    ("svc/head", "internet", 443, "TCP", False),
    # Prometheus scrapes every metrics port, and nothing scrapes it but Grafana/heads.
    ("prometheus", "svc/head", 8080, "TCP", True),
    ("prometheus", "svc/head", 44217, "TCP", True),
    ("prometheus", "svc/head", 44227, "TCP", True),
    ("prometheus", "svc/worker0a", 8080, "TCP", True),
    ("prometheus", "svc/head", 6379, "TCP", False),
    ("prometheus", "kuberay-operator", 8080, "TCP", True),
    ("prometheus", "dcgm-exporter", 9400, "TCP", True),
    ("prometheus", "kube-state-metrics", 8080, "TCP", True),
    ("prometheus", "alertmanager", 9093, "TCP", True),
    ("prometheus", "node", 10250, "TCP", True),  # kubelets: Prometheus's egress is open
    ("grafana", "prometheus", 9090, "TCP", True),
    ("grafana", "alertmanager", 9093, "TCP", True),
    ("grafana", "internet", 443, "TCP", False),
    ("grafana", "svc/head", 8265, "TCP", False),
    ("kube-state-metrics", "api-server", 443, "TCP", True),
    ("kube-state-metrics", "prometheus", 9090, "TCP", False),
    # Alertmanager: its webhook on the internet, not the VPC.
    ("alertmanager", "internet", 443, "TCP", True),
    ("alertmanager", "node", 443, "TCP", False),
    ("alertmanager", "metadata-server", 80, "TCP", False),
    # The GPU Operator (driver from GKE): the API server only.
    ("gpu-driver", "api-server", 443, "TCP", True),
    ("gpu-driver", "internet", 443, "TCP", False),
    ("dcgm-exporter", "svc/head", 8265, "TCP", False),
]
# prod: two services, each with its own Memorystore instance.
PROD_FLOWS = [
    ("embeddings/head", "memorystore", 6378, "TCP", True),
    ("embeddings/cleanup", "memorystore", 6378, "TCP", True),
    ("embeddings/head", "other-memorystore", 6378, "TCP", False),
    ("embeddings/worker0a", "memorystore", 6378, "TCP", False),
    ("embeddings/head", "memorystore", 6379, "TCP", False),  # TLS port only
    # Services are strangers to each other.
    ("embeddings/worker0a", "classifier/head", 6379, "TCP", False),
    ("classifier/head", "embeddings/worker0a", 30500, "TCP", False),
    ("classifier/worker0a", "classifier/head", 6379, "TCP", True),
]
# prod with in-cluster Redis: a head reaches its own service's Redis only.
PROD_IN_CLUSTER_FLOWS = [
    ("embeddings/head", "embeddings/redis", 6379, "TCP", True),
    ("classifier/head", "embeddings/redis", 6379, "TCP", False),
    ("classifier/cleanup", "embeddings/redis", 6379, "TCP", False),
]
REGIONAL_FLOWS = [
    ("regional-proxy", "svc/worker0a", 8000, "TCP", True),
    ("regional-proxy", "svc/head", 8265, "TCP", True),
    ("regional-proxy", "grafana", 3000, "TCP", True),
    ("regional-proxy", "svc/head", 6379, "TCP", False),
]
GPU_DRIVER_FLOWS = [
    ("gpu-driver", "internet", 443, "TCP", True),  # the driver container's packages
    ("gpu-driver", "node", 443, "TCP", False),
    ("dcgm-exporter", "svc/head", 8265, "TCP", False),
]
CASES = [
    ("dev", None, DEV_FLOWS),
    ("prod", None, PROD_FLOWS),
    ("prod", {"redis": "in-cluster"}, PROD_IN_CLUSTER_FLOWS),
    ("dev", {"gatewayClass": "gke-l7-regional-external-managed"}, REGIONAL_FLOWS),
    ("dev", {"gpuDriver": "operator"}, GPU_DRIVER_FLOWS),
]


@pytest.mark.parametrize(("stack_name", "overrides", "flows"), CASES)
def test_the_policies_allow_exactly_the_intended_flows(
    stack_name: str, overrides: Mapping[str, Any] | None, flows: list[tuple[Any, ...]]
) -> None:
    objects = _objects(stack_name, overrides)
    policies = _policies(objects)
    stack = load_stack_file(stack_name)
    endpoints = world(stack, objects)
    service = stack.services[0].name
    wrong = []
    for source, target, port, protocol, expected in flows:
        src = endpoints[source.replace("svc/", f"{service}/")]
        dst = endpoints[target.replace("svc/", f"{service}/")]
        if allowed(policies, src, dst, port, protocol) != expected:
            wrong.append((source, target, port, protocol, expected))
    assert wrong == []


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_namespace_the_stack_creates_denies_by_default(stack_name: str) -> None:
    objects = _objects(stack_name)
    policies = _policies(objects)
    created = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert created == set(stack_namespaces(load_stack_file(stack_name)))
    for namespace in created:
        (deny,) = [
            p
            for p in policies
            if (p["metadata"]["namespace"], p["metadata"]["name"]) == (namespace, "default-deny")
        ]
        assert deny["spec"] == {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": [],
        }
    # An unknown pod is reached by no one and reaches nothing outside the cluster; in
    # the Ray and operator namespaces not even DNS (monitoring's and the GPU Operator's
    # own pods all get DNS and the API server, by namespace).
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    for namespace in created:
        stranger = Pod(namespace, {"app": "stranger"})
        assert not allowed(policies, Host("35.191.10.1"), stranger, 8000)
        assert not allowed(policies, Host("151.101.1.1"), stranger, 443)
        assert not allowed(policies, stranger, Host("151.101.1.1"), 443)
        ray_side = namespace in {"ray", "kuberay-system"}
        assert allowed(policies, stranger, dns, 53, "UDP") is not ray_side


VARIANTS = [
    {},
    {"monitoring": False},
    {"kuberaySingleNamespace": True},
    {"gatewayClass": "gke-l7-rilb", "cloudArmor": False},
    {"gpuDriver": "operator"},
    {"redis": "none"},
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(o) or "as-is")
@pytest.mark.parametrize("stack_name", STACKS)
def test_every_policy_validates_and_names_are_unique(
    stack_name: str, overrides: dict[str, Any]
) -> None:
    if stack_name == "prod" and overrides.get("redis") == "none":
        pytest.skip("production stacks refuse redis: none")
    policies = _policies(_objects(stack_name, overrides))
    assert policies
    for policy in policies:
        assert validation_errors(policy) == [], policy["metadata"]
    keys = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in policies]
    assert len(keys) == len(set(keys))


def test_without_monitoring_nothing_points_at_a_monitoring_namespace() -> None:
    policies = _policies(_objects("dev", {"monitoring": False}))
    assert MONITORING_NAMESPACE not in str(policies)


def test_single_namespace_operator_is_confined_in_the_ray_namespace() -> None:
    objects = _objects("dev", {"kuberaySingleNamespace": True})
    policies = _policies(objects)
    stack = load_stack_file("dev").model_copy(update={"kuberay_single_namespace": True})
    endpoints = world(stack, objects)
    service = stack.services[0].name
    operator = endpoints["kuberay-operator"]
    assert isinstance(operator, Pod) and operator.namespace == stack.namespace
    assert allowed(policies, operator, endpoints[f"{service}/head"], 8265)
    assert allowed(policies, operator, endpoints["api-server"], 443)
    assert not allowed(policies, endpoints[f"{service}/worker0a"], operator, 8080)
    assert not allowed(policies, operator, endpoints[f"{service}/redis"], 6379)


def test_memorystore_is_reached_at_its_instance_address_only() -> None:
    # The instance's IP is known only after it exists: the policy takes it as an output.
    (clients,) = [
        p
        for p in _policies(_objects("prod"))
        if p["metadata"]["name"] == "embeddings-gcs-redis-clients"
    ]
    (rule,) = clients["spec"]["egress"]
    assert rule == {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [
        {"protocol": "TCP", "port": 6378}]}  # fmt: skip
    stack = load_stack_file("prod")
    cidrs = {s.name: f"10.0.0.{i}/32" for i, s in enumerate(stack.services)}
    pure = network_policies(stack, cidrs)
    for service in stack.services:
        (own,) = [p for p in pure if p["metadata"]["name"] == f"{service.name}-gcs-redis-clients"]
        assert own["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": cidrs[service.name]}}]


def _dependency_types(run: ProgramRun, resource: Any) -> set[str]:
    by_urn = {r.urn: r for r in run.resources}
    seen: set[str] = set()
    todo = list(resource.dependencies)
    parent = next((r for r in run.resources if r.key == resource.parent), None)
    while parent is not None:
        todo += parent.dependencies
        parent = next((r for r in run.resources if r.key == parent.parent), None)
    while todo:
        urn = todo.pop()
        if urn in seen or urn not in by_urn:
            continue
        seen.add(urn)
        todo += by_urn[urn].dependencies
    return {by_urn[u].type for u in seen}


def test_policies_wait_for_the_namespaces_they_go_into() -> None:
    run = run_program("dev")
    policies = run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    namespaces = {p.inputs["metadata"]["namespace"] for p in policies}
    assert namespaces == {"ray", "kuberay-system", MONITORING_NAMESPACE, GPU_OPERATOR_NAMESPACE}
    for policy in policies:
        deps = _dependency_types(run, policy)
        # KubeRay's namespaces, and the releases that create monitoring and gpu-operator.
        assert "kubernetes:core/v1:Namespace" in deps
        assert "kubernetes:helm.sh/v3:Release" in deps
