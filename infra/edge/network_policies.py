"""Layer 10: NetworkPolicies of every namespace the stack creates (Dataplane V2 enforces them).

Each namespace (Ray, KubeRay operator, monitoring, GPU Operator) starts from deny-all,
ingress and egress; then exactly these flows are opened (`network_policies`):

Ray namespace
- a service's Ray pods <-> the same service's Ray pods, any port (GCS 6379, client
  10001, raylet, object manager, dashboard agent, worker ports, HAProxy's replica ports);
- Serve (8000) on workers and the dashboard (8265) on heads from the load balancer's
  proxies and health checkers, and from the KubeRay operator;
- metrics ports from Prometheus;
- a service's head (and KubeRay's Redis cleanup Job) -> that service's Redis (6379), or
  its Memorystore instance (its IP, TLS port 6378); the exporter's port from Prometheus;
- heads -> the API server (KubeRay's autoscaler sidecar) and Prometheus/Grafana (the
  dashboard's metrics tab); every Ray pod -> kube-dns.
  Nothing else leaves a Ray pod: model code reaches neither the internet, nor the
  monitoring stack, nor the operator, nor another service.
KubeRay operator: -> API server, kube-dns, heads' dashboards and workers' Serve port;
  its metrics from Prometheus.
monitoring: every pod -> API server and kube-dns, and takes any port from Prometheus
  (and admission webhooks from the control plane); Prometheus -> anywhere (it scrapes
  kubelets and node-exporters on node IPs, which a Dataplane V2 ipBlock cannot select);
  Prometheus <- Grafana and Ray heads; Grafana <- the load balancer; Grafana ->
  Prometheus, Alertmanager; Alertmanager -> HTTPS on the internet (its webhook).
GPU Operator: every pod -> API server and kube-dns (and, in `operator` driver mode,
  HTTP(S) on the internet: the driver container fetches packages); DCGM metrics from
  Prometheus; admission webhooks from the control plane.

Ray pods are selected by the labels KubeRay itself puts on them (`ray.io/cluster`,
`ray.io/node-type`, which a pod template cannot override) together with the service's
`app.kubernetes.io/instance`: a pod that only copies our labels is no Ray node. (KubeRay
names a RayService's cluster `<service>-<random>`, so a static policy cannot pin the
exact `ray.io/cluster` value; Ray's token auth still guards the GCS behind this.)
Peers in other namespaces are selected with `kubernetes.io/metadata.name`, which only
the API server sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.constants import (
    DASHBOARD_PORT,
    GOOGLE_FRONTEND_RANGES,
    GPU_OPERATOR_NAMESPACE,
    METRICS_PORT,
    MONITORING_NAMESPACE,
    REDIS_EXPORTER_PORT,
    REDIS_PORT,
    SERVE_PORT,
    has_gpu_pools,
    is_global,
)
from infra.kuberay import operator_namespace
from infra.network import WEBHOOK_PORTS
from infra.redis import MEMORYSTORE_TLS_PORT, redis_labels

RAY_METRICS_PORTS = [METRICS_PORT, 44217, 44227]  # Ray, autoscaler, dashboard
KUBERAY_METRICS_PORT = 8080
DCGM_EXPORTER_PORT = 9400
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000  # the Grafana pod's port (its Service maps 80 to it)
ALERTMANAGER_PORT = 9093
ALERTMANAGER_MESH_PORT = 9094
DNS_PORT = 53
API_SERVER_PORTS = {"gke": [443], "existing": [443, 6443]}  # kubeadm/kind serve 6443
INSTANCE = "app.kubernetes.io/instance"
NAME = "app.kubernetes.io/name"
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by the API server, immutable
# The internet, for the few pods that must reach it: not the VPC, not link-local.
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]
LINK_LOCAL = "169.254.0.0/16"


def _ports(*ports: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": port} for port in ports]


def _in(namespace: str, pods: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pods of another namespace (all of them when `pods` is None)."""
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME: namespace}}}
    if pods is not None:
        peer["podSelector"] = dict(pods)
    return peer


def ray_pods(service: str | None, *node_types: str) -> dict[str, Any]:
    """Ray pods of one service (or of any, with None) of the given KubeRay node types."""
    selector: dict[str, Any] = {
        "matchExpressions": [
            {"key": "ray.io/cluster", "operator": "Exists"},
            {"key": "ray.io/node-type", "operator": "In", "values": list(node_types)},
        ]
    }
    if service is not None:
        selector["matchLabels"] = {INSTANCE: service}
    return selector


def _labels(**labels: str) -> dict[str, Any]:
    return {"matchLabels": labels}


OPERATOR_PODS = _labels(**{NAME: "kuberay-operator"})
PROMETHEUS_PODS = _labels(**{NAME: "prometheus"})
GRAFANA_PODS = _labels(**{NAME: "grafana"})
ALERTMANAGER_PODS = _labels(**{NAME: "alertmanager"})
KUBE_DNS = _in("kube-system", _labels(**{"k8s-app": "kube-dns"}))


def load_balancer_sources(stack: StackConfig) -> list[dict[str, Any]]:
    """Where Gateway traffic and health checks come from for this Gateway class."""
    ranges = list(GOOGLE_FRONTEND_RANGES)
    if not is_global(stack):
        ranges.append(stack.proxy_only_cidr)  # regional Envoy proxies
    return [{"ipBlock": {"cidr": cidr}} for cidr in ranges]


def dns_egress() -> dict[str, Any]:
    return {
        "to": [KUBE_DNS],
        "ports": _ports(DNS_PORT, protocol="UDP") + _ports(DNS_PORT),
    }


def api_server_egress(stack: StackConfig) -> dict[str, Any]:
    """The control plane's endpoint (GKE: its private IP in `masterCidr`). Dataplane V2
    applies policy after the `kubernetes` Service's address is translated, so the
    endpoint's range is what must be allowed."""
    return {
        "to": [{"ipBlock": {"cidr": stack.master_cidr}}],
        "ports": _ports(*API_SERVER_PORTS[stack.cluster_mode]),
    }


def internet_egress(*ports: int) -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_RANGES, LINK_LOCAL]}}],
        "ports": _ports(*ports),
    }


def webhook_ingress(stack: StackConfig) -> dict[str, Any]:
    """The control plane calling admission webhooks (the VPC firewall's same ports)."""
    return {
        "from": [{"ipBlock": {"cidr": stack.master_cidr}}],
        "ports": _ports(*(int(port) for port in WEBHOOK_PORTS)),
    }


def _policy(
    namespace: str,
    name: str,
    pods: Mapping[str, Any],
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": dict(pods), "policyTypes": []}
    if ingress is not None:
        spec["policyTypes"].append("Ingress")
        spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "rayserve-gke"},
        },
        "spec": spec,
    }


def default_deny(namespace: str) -> dict[str, Any]:
    """Every pod of the namespace isolated both ways; the other policies add flows."""
    return _policy(namespace, "default-deny", {}, ingress=[], egress=[])


def _ray_namespace(stack: StackConfig, memorystore: Mapping[str, Any]) -> list[dict[str, Any]]:
    ns = stack.namespace
    lb = load_balancer_sources(stack)
    operator = _in(operator_namespace(stack), OPERATOR_PODS)
    prometheus = _in(MONITORING_NAMESPACE, PROMETHEUS_PODS)
    policies = [
        _policy(
            ns,
            "ray-serve-ingress",
            ray_pods(None, "worker"),
            ingress=[{"from": [*lb, operator], "ports": _ports(SERVE_PORT)}],
        ),
        _policy(
            ns,
            "ray-dashboard-ingress",
            ray_pods(None, "head"),
            ingress=[{"from": [*lb, operator], "ports": _ports(DASHBOARD_PORT)}],
        ),
        _policy(
            ns, "ray-dns", ray_pods(None, "head", "worker", "redis-cleanup"), egress=[dns_egress()]
        ),
        # KubeRay's autoscaler sidecar scales the cluster through the API server.
        _policy(
            ns, "ray-head-api-server", ray_pods(None, "head"), egress=[api_server_egress(stack)]
        ),
    ]
    if stack.monitoring:
        policies += [
            _policy(
                ns,
                "ray-metrics-ingress",
                ray_pods(None, "head", "worker"),
                ingress=[{"from": [prometheus], "ports": _ports(*RAY_METRICS_PORTS)}],
            ),
            # The dashboard's metrics tab: Prometheus queries and Grafana's health.
            _policy(
                ns,
                "ray-head-monitoring",
                ray_pods(None, "head"),
                egress=[
                    {
                        "to": [_in(MONITORING_NAMESPACE, PROMETHEUS_PODS)],
                        "ports": _ports(PROMETHEUS_PORT),
                    },
                    {
                        "to": [_in(MONITORING_NAMESPACE, GRAFANA_PODS)],
                        "ports": _ports(GRAFANA_PORT),
                    },
                ],
            ),
        ]
    for service in stack.services:
        own = ray_pods(service.name, "head", "worker")
        # Any port, but only among the pods of this service's Ray cluster(s).
        policies.append(
            _policy(
                ns,
                f"{service.name}-ray-cluster",
                own,
                ingress=[{"from": [{"podSelector": own}]}],
                egress=[{"to": [{"podSelector": own}]}],
            )
        )
        clients = ray_pods(service.name, "head", "redis-cleanup")
        if stack.redis == "in-cluster":
            store = _labels(**redis_labels(service.name))
            ingress = [{"from": [{"podSelector": clients}], "ports": _ports(REDIS_PORT)}]
            if stack.monitoring:
                ingress.append({"from": [prometheus], "ports": _ports(REDIS_EXPORTER_PORT)})
            # No egress rule: the Redis pod talks to nothing (its exporter to localhost).
            policies.append(
                _policy(ns, f"{service.name}-gcs-redis", store, ingress=ingress, egress=[])
            )
            to_store: dict[str, Any] = {"to": [{"podSelector": store}], "ports": _ports(REDIS_PORT)}
        elif stack.redis == "memorystore":
            to_store = {
                "to": [{"ipBlock": {"cidr": memorystore[service.name]}}],
                "ports": _ports(MEMORYSTORE_TLS_PORT),
            }
        else:
            continue
        policies.append(
            _policy(ns, f"{service.name}-gcs-redis-clients", clients, egress=[to_store])
        )
    return policies


def _operator(stack: StackConfig) -> list[dict[str, Any]]:
    ray = stack.namespace
    ingress = []
    if stack.monitoring:
        ingress.append(
            {
                "from": [_in(MONITORING_NAMESPACE, PROMETHEUS_PODS)],
                "ports": _ports(KUBERAY_METRICS_PORT),
            }
        )
    return [
        _policy(
            operator_namespace(stack),
            "kuberay-operator",
            OPERATOR_PODS,
            ingress=ingress,
            egress=[
                dns_egress(),
                api_server_egress(stack),
                # Serve application status from heads, proxy health from workers.
                {"to": [_in(ray, ray_pods(None, "head"))], "ports": _ports(DASHBOARD_PORT)},
                {"to": [_in(ray, ray_pods(None, "worker"))], "ports": _ports(SERVE_PORT)},
            ],
        )
    ]


def _monitoring(stack: StackConfig) -> list[dict[str, Any]]:
    ns = MONITORING_NAMESPACE
    ray_heads = _in(stack.namespace, ray_pods(None, "head"))
    prometheus = {"podSelector": PROMETHEUS_PODS}
    grafana = {"podSelector": GRAFANA_PODS}
    alertmanager = {"podSelector": ALERTMANAGER_PODS}
    mesh = _ports(ALERTMANAGER_MESH_PORT) + _ports(ALERTMANAGER_MESH_PORT, protocol="UDP")
    return [
        _policy(
            ns,
            "monitoring-platform",
            {},
            # Prometheus scrapes every pod here (itself, operator, kube-state-metrics...).
            ingress=[{"from": [prometheus]}, webhook_ingress(stack)],
            # Operator, kube-state-metrics, Grafana's sidecars and the chart's hook
            # Jobs read the API; nothing else leaves by default.
            egress=[dns_egress(), api_server_egress(stack)],
        ),
        _policy(
            ns,
            "prometheus",
            PROMETHEUS_PODS,
            ingress=[{"from": [grafana, ray_heads], "ports": _ports(PROMETHEUS_PORT)}],
            egress=[{}],
        ),
        _policy(
            ns,
            "grafana",
            GRAFANA_PODS,
            ingress=[
                {"from": load_balancer_sources(stack), "ports": _ports(GRAFANA_PORT)},
                {"from": [ray_heads], "ports": _ports(GRAFANA_PORT)},
            ],
            egress=[
                {"to": [prometheus], "ports": _ports(PROMETHEUS_PORT)},
                {"to": [alertmanager], "ports": _ports(ALERTMANAGER_PORT)},
            ],
        ),
        _policy(
            ns,
            "alertmanager",
            ALERTMANAGER_PODS,
            ingress=[
                {"from": [prometheus, grafana], "ports": _ports(ALERTMANAGER_PORT)},
                {"from": [alertmanager], "ports": mesh},
            ],
            egress=[
                internet_egress(443),  # the receiver's webhook
                {"to": [alertmanager], "ports": mesh},
            ],
        ),
    ]


def _gpu_operator(stack: StackConfig) -> list[dict[str, Any]]:
    egress = [dns_egress(), api_server_egress(stack)]
    if stack.gpu_driver == "operator":
        egress.append(internet_egress(80, 443))  # the driver container's package mirrors
    ingress = [webhook_ingress(stack)]
    if stack.monitoring:
        ingress.append(
            {
                "from": [_in(MONITORING_NAMESPACE, PROMETHEUS_PODS)],
                "ports": _ports(DCGM_EXPORTER_PORT),
            }
        )
    return [
        _policy(GPU_OPERATOR_NAMESPACE, "gpu-operator-platform", {}, ingress=ingress, egress=egress)
    ]


def stack_namespaces(stack: StackConfig) -> list[str]:
    """Every namespace the stack creates, each once."""
    namespaces = [stack.namespace, operator_namespace(stack)]
    if stack.monitoring:
        namespaces.append(MONITORING_NAMESPACE)
    if has_gpu_pools(stack):
        namespaces.append(GPU_OPERATOR_NAMESPACE)
    return list(dict.fromkeys(namespaces))


def network_policies(
    stack: StackConfig, memorystore: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Every NetworkPolicy of the stack. `memorystore`: service -> its instance's CIDR
    (`<ip>/32`; a str, or a Pulumi Output), for `redis: memorystore`."""
    memorystore = memorystore or {}
    policies = [default_deny(ns) for ns in stack_namespaces(stack)]
    policies += _ray_namespace(stack, memorystore)
    policies += _operator(stack)
    if stack.monitoring:
        policies += _monitoring(stack)
    if has_gpu_pools(stack):
        policies += _gpu_operator(stack)
    return policies


@dataclass
class NetworkPoliciesArgs:
    stack: StackConfig
    """The validated stack config."""
    memorystore_hosts: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Memorystore only: service -> its instance's IP."""


class NetworkPolicies(pulumi.ComponentResource):
    """Every namespace's NetworkPolicies (see the module docstring). Depend it on what
    creates the namespaces (KubeRay, monitoring, GPU Operator)."""

    def __init__(
        self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:edge:NetworkPolicies", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cidrs = {
            service: pulumi.Output.concat(host, "/32")
            for service, host in args.memorystore_hosts.items()
        }
        for policy in network_policies(args.stack, cidrs):
            meta = policy["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{meta['namespace']}-{meta['name']}",
                metadata=meta,
                spec=policy["spec"],
                opts=child,
            )
        self.register_outputs({})
