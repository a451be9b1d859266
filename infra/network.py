"""Layer 1: the VPC the cluster lives in.

A custom-mode VPC with one subnet (secondary ranges for pods and services, so the
cluster is VPC-native), Cloud Router + Cloud NAT so private nodes reach registries,
and the one firewall rule GKE does not create itself: the control plane calling
admission webhooks on the nodes (GKE opens only 443 and 10250 for private clusters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import StackConfig

PODS_RANGE = "pods"
SERVICES_RANGE = "services"
# Ports of the webhooks the platform installs (KubeRay, GPU Operator, prometheus-operator).
WEBHOOK_PORTS = ["8443", "9443", "10250"]


def node_tag(name: str) -> str:
    """The network tag every node of this stack carries (firewall target)."""
    return f"{name}-node"


def stack_needs_proxy_subnet(stack: StackConfig) -> bool:
    return stack.gateway_class != "gke-l7-global-external-managed"


def network_spec(name: str, stack: StackConfig) -> dict[str, Any]:
    """Plain arguments of every network resource, keyed by resource."""
    return {
        "network": {
            "name": f"{name}-vpc",
            "auto_create_subnetworks": False,
            "routing_mode": "REGIONAL",
            "project": stack.gcp_project,
        },
        "subnetwork": {
            "name": f"{name}-nodes",
            "region": stack.region,
            "ip_cidr_range": stack.node_cidr,
            "private_ip_google_access": True,
            "secondary_ip_ranges": [
                {"range_name": PODS_RANGE, "ip_cidr_range": stack.pod_cidr},
                {"range_name": SERVICES_RANGE, "ip_cidr_range": stack.service_cidr},
            ],
            "log_config": {"aggregation_interval": "INTERVAL_10_MIN", "flow_sampling": 0.1},
            "project": stack.gcp_project,
        },
        "router": {"name": f"{name}-router", "region": stack.region, "project": stack.gcp_project},
        "nat": {
            "name": f"{name}-nat",
            "region": stack.region,
            "nat_ip_allocate_option": "AUTO_ONLY",
            "source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
            "log_config": {"enable": True, "filter": "ERRORS_ONLY"},
            "project": stack.gcp_project,
        },
        "proxy_only_subnetwork": {
            # Regional Gateway classes run their Envoy proxies in this subnet.
            "name": f"{name}-proxy-only",
            "region": stack.region,
            "ip_cidr_range": stack.proxy_only_cidr,
            "purpose": "REGIONAL_MANAGED_PROXY",
            "role": "ACTIVE",
            "project": stack.gcp_project,
        },
        "webhook_firewall": {
            "name": f"{name}-master-to-webhooks",
            "direction": "INGRESS",
            "source_ranges": [stack.master_cidr],
            "target_tags": [node_tag(name)],
            "allows": [{"protocol": "tcp", "ports": WEBHOOK_PORTS}],
            "description": "GKE control plane to admission webhooks on the nodes",
            "project": stack.gcp_project,
        },
    }


@dataclass
class NetworkArgs:
    stack: StackConfig
    """The validated stack config."""


class Network(pulumi.ComponentResource):
    """VPC, subnet with pod/service ranges, Cloud NAT, and the webhook firewall rule."""

    network: gcp.compute.Network
    subnetwork: gcp.compute.Subnetwork

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:network:Network", name, None, opts)
        spec = network_spec(name, args.stack)
        child = pulumi.ResourceOptions(parent=self)
        self.network = gcp.compute.Network(f"{name}-vpc", **spec["network"], opts=child)
        self.subnetwork = gcp.compute.Subnetwork(
            f"{name}-nodes", network=self.network.id, **spec["subnetwork"], opts=child
        )
        router = gcp.compute.Router(
            f"{name}-router", network=self.network.id, **spec["router"], opts=child
        )
        gcp.compute.RouterNat(f"{name}-nat", router=router.name, **spec["nat"], opts=child)
        gcp.compute.Firewall(
            f"{name}-master-to-webhooks",
            network=self.network.id,
            **spec["webhook_firewall"],
            opts=child,
        )
        if stack_needs_proxy_subnet(args.stack):
            gcp.compute.Subnetwork(
                f"{name}-proxy-only",
                network=self.network.id,
                **spec["proxy_only_subnetwork"],
                opts=child,
            )
        self.register_outputs({"network": self.network.id, "subnetwork": self.subnetwork.id})
