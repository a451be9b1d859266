"""Layer 10: NetworkPolicies of the Ray namespace (Dataplane V2 enforces them).

Default deny ingress, then exactly these openings:
- Serve (8000) from the load balancer's proxies and health checkers, and the KubeRay
  operator (it probes Serve);
- the dashboard (8265) of heads from the load balancer (IAP-gated) and the operator;
- everything among the pods of one service's Ray cluster (GCS 6379, client 10001,
  object manager and worker ports are all in here);
- metrics ports from Prometheus;
- Redis (6379) from Ray heads only, its exporter port from Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.constants import (
    DASHBOARD_PORT,
    GOOGLE_FRONTEND_RANGES,
    METRICS_PORT,
    MONITORING_NAMESPACE,
    REDIS_EXPORTER_PORT,
    REDIS_PORT,
    SERVE_PORT,
    is_global,
)
from infra.kuberay import operator_namespace

RAY_METRICS_PORTS = [METRICS_PORT, 44217, 44227]
INSTANCE = "app.kubernetes.io/instance"


def _policy(
    stack: StackConfig, name: str, pods: dict[str, str], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": stack.namespace},
        "spec": {
            "podSelector": {"matchLabels": pods} if pods else {},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _namespace_pods(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": labels},
    }


def load_balancer_sources(stack: StackConfig) -> list[dict[str, Any]]:
    """Where Gateway traffic and health checks come from for this Gateway class."""
    ranges = list(GOOGLE_FRONTEND_RANGES)
    if not is_global(stack):
        ranges.append(stack.proxy_only_cidr)  # regional Envoy proxies
    return [{"ipBlock": {"cidr": cidr}} for cidr in ranges]


def network_policies(stack: StackConfig) -> list[dict[str, Any]]:
    operator = _namespace_pods(
        operator_namespace(stack), {"app.kubernetes.io/name": "kuberay-operator"}
    )
    prometheus = _namespace_pods(MONITORING_NAMESPACE, {"app.kubernetes.io/name": "prometheus"})
    policies = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-ingress", "namespace": stack.namespace},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        },
        _policy(
            stack,
            "serve-from-load-balancer",
            {"ray.io/node-type": "worker"},
            [{"from": [*load_balancer_sources(stack), operator], "ports": _ports(SERVE_PORT)}],
        ),
        _policy(
            stack,
            "dashboard-from-load-balancer",
            {"ray.io/node-type": "head"},
            [{"from": [*load_balancer_sources(stack), operator], "ports": _ports(DASHBOARD_PORT)}],
        ),
        _policy(
            stack,
            "ray-metrics-from-prometheus",
            {"app.kubernetes.io/name": "rayserve"},
            [{"from": [prometheus], "ports": _ports(*RAY_METRICS_PORTS)}],
        ),
        _policy(
            stack,
            "redis-from-ray-heads",
            {"app.kubernetes.io/name": "gcs-redis"},
            [
                {
                    "from": [{"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
                    "ports": _ports(REDIS_PORT),
                },
                {"from": [prometheus], "ports": _ports(REDIS_EXPORTER_PORT)},
            ],
        ),
    ]
    for service in stack.services:
        # Any port, but only from pods of the same service's Ray cluster.
        same_cluster = {INSTANCE: service.name}
        policies.append(
            _policy(
                stack,
                f"{service.name}-ray-internal",
                same_cluster,
                [{"from": [{"podSelector": {"matchLabels": same_cluster}}]}],
            )
        )
    return policies


@dataclass
class NetworkPoliciesArgs:
    stack: StackConfig
    """The validated stack config."""


class NetworkPolicies(pulumi.ComponentResource):
    """The Ray namespace's NetworkPolicies (see the module docstring)."""

    def __init__(
        self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:edge:NetworkPolicies", name, None, opts)
        # They were the Edge component's children: the alias keeps their URNs, so an
        # update moves them here without deleting a policy that is in force.
        was_under_edge = pulumi.Alias(parent=pulumi.create_urn(name, "rayserve-gke:edge:Edge"))
        child = pulumi.ResourceOptions(parent=self, aliases=[was_under_edge])
        for policy in network_policies(args.stack):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{policy['metadata']['name']}",
                metadata=policy["metadata"],
                spec=policy["spec"],
                opts=child,
            )
        self.register_outputs({})
