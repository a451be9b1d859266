"""Layer 2: the GKE cluster and its node pools.

Pure builders turn the stack config into the arguments of `gcp.container.Cluster` and
one `gcp.container.NodePool` per configured pool; `GkeCluster` only wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import SYSTEM_POOL, NodePool, StackConfig
from infra.constants import POOL_LABEL, ROLE_LABEL
from infra.network import PODS_RANGE, SERVICES_RANGE, Network, node_tag

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
# In operator mode GKE must not deploy its own device plugin: the GPU Operator does.
NO_GKE_DEVICE_PLUGIN_LABEL = "gke-no-default-nvidia-gpu-device-plugin"

# Least privilege for nodes: Google's role for node service accounts (logs, metrics,
# metadata) on the project, and read access to this stack's registry only.
NODE_PROJECT_ROLES = ["roles/container.defaultNodeServiceAccount"]
NODE_REGISTRY_ROLE = "roles/artifactregistry.reader"


# The oldest control plane the generated manifests are validated for; the cluster asks
# for at least this version, and the release channel upgrades it from there.
KUBERNETES_VERSION = "1.35.0"


def location(stack: StackConfig) -> str:
    """A zone makes a zonal cluster; otherwise the cluster is regional."""
    return stack.zone or stack.region


def pool_role(pool: NodePool) -> str:
    if pool.name == SYSTEM_POOL:
        return "system"
    return "gpu" if pool.gpu_type else "cpu"


def node_pool_spec(name: str, stack: StackConfig, pool: NodePool) -> dict[str, Any]:
    """Arguments of one `gcp.container.NodePool` (cluster and service account added later)."""
    labels = {POOL_LABEL: pool.name, ROLE_LABEL: pool_role(pool)}
    node_config: dict[str, Any] = {
        "machine_type": pool.machine_type,
        "disk_size_gb": pool.disk_size_gb,
        "disk_type": "pd-balanced",
        "spot": pool.spot,
        "image_type": "COS_CONTAINERD",
        "labels": labels,
        "tags": [node_tag(name)],
        "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        "workload_metadata_config": {"mode": "GKE_METADATA"},
        "shielded_instance_config": {
            "enable_secure_boot": True,
            "enable_integrity_monitoring": True,
        },
        "metadata": {"disable-legacy-endpoints": "true"},
    }
    if pool.gpu_type:
        operator_driver = stack.gpu_driver == "operator"
        node_config["guest_accelerators"] = [
            {
                "type": pool.gpu_type,
                "count": stack.gpus_per_node(pool),
                "gpu_driver_installation_config": {
                    "gpu_driver_version": "INSTALLATION_DISABLED" if operator_driver else "LATEST"
                },
            }
        ]
        node_config["taints"] = [GPU_TAINT]
        if operator_driver:
            # The GPU Operator's driver containers need Ubuntu nodes.
            node_config["image_type"] = "UBUNTU_CONTAINERD"
            labels[NO_GKE_DEVICE_PLUGIN_LABEL] = "true"
    return {
        "name": pool.name,
        "location": location(stack),
        "initial_node_count": pool.min_nodes,
        "autoscaling": {
            "min_node_count": pool.min_nodes,
            "max_node_count": pool.max_nodes,
            # Spot capacity comes and goes per zone: take it wherever it is.
            "location_policy": "ANY" if pool.spot else "BALANCED",
        },
        "management": {"auto_repair": True, "auto_upgrade": True},
        # Surge upgrades: new nodes join before old ones drain (Ray pods move, PDBs hold).
        "upgrade_settings": {
            "strategy": "SURGE",
            "max_surge": pool.upgrade_max_surge,
            "max_unavailable": pool.upgrade_max_unavailable,
        },
        "node_config": node_config,
        "project": stack.gcp_project,
    }


# A Saturday in the past: GKE reads a recurring window's time of day and length from it.
MAINTENANCE_REFERENCE_DAY = "2026-01-03"


def maintenance_policy(stack: StackConfig) -> dict[str, Any]:
    """A weekly recurring window on `maintenanceDays` from `maintenanceStartUtc`."""
    start = datetime.fromisoformat(
        f"{MAINTENANCE_REFERENCE_DAY}T{stack.maintenance_start_utc}:00+00:00"
    )
    end = start + timedelta(hours=stack.maintenance_hours)
    return {
        "recurring_window": {
            "start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recurrence": f"FREQ=WEEKLY;BYDAY={stack.maintenance_days}",
        }
    }


def _dns_endpoint(config: Any) -> str:
    dns = (config or {}).get("dns_endpoint_config") or (config or {}).get("dnsEndpointConfig") or {}
    endpoint = getattr(dns, "endpoint", None) or (
        dns.get("endpoint") if isinstance(dns, dict) else None
    )
    return str(endpoint)


def cluster_spec(name: str, stack: StackConfig) -> dict[str, Any]:
    """Arguments of `gcp.container.Cluster` (network, subnetwork, account added later)."""
    return {
        "name": name,
        "location": location(stack),
        "project": stack.gcp_project,
        # The default pool cannot be configured like ours: create it minimal, remove it.
        "remove_default_node_pool": True,
        "initial_node_count": 1,
        "deletion_protection": stack.production,
        "release_channel": {"channel": stack.release_channel},
        # Auto-upgrades (control plane and nodes) only inside these windows.
        "maintenance_policy": maintenance_policy(stack),
        "min_master_version": KUBERNETES_VERSION.rsplit(".", 1)[0],
        "networking_mode": "VPC_NATIVE",
        "ip_allocation_policy": {
            "cluster_secondary_range_name": PODS_RANGE,
            "services_secondary_range_name": SERVICES_RANGE,
        },
        "private_cluster_config": {
            "enable_private_nodes": True,
            "enable_private_endpoint": False,
            "master_ipv4_cidr_block": stack.master_cidr,
        },
        # How `pulumi up` (a laptop, a CI runner) reaches the control plane: through its
        # DNS name, authorized by IAM (`dns`), or its IP, from masterAuthorizedNetworks.
        "control_plane_endpoints_config": {
            "dns_endpoint_config": {"allow_external_traffic": stack.control_plane_access == "dns"},
        },
        "master_authorized_networks_config": {
            "cidr_blocks": [
                {"cidr_block": cidr, "display_name": f"authorized-{i}"}
                for i, cidr in enumerate(stack.master_authorized_networks)
            ],
            "gcp_public_cidrs_access_enabled": False,
        },
        "workload_identity_config": {"workload_pool": f"{stack.gcp_project}.svc.id.goog"},
        # Dataplane V2 enforces NetworkPolicy itself: no separate network_policy addon.
        "datapath_provider": "ADVANCED_DATAPATH",
        "gateway_api_config": {"channel": "CHANNEL_STANDARD"},
        "enable_shielded_nodes": True,
        "logging_config": {"enable_components": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
        # Ray's metrics go to the in-cluster Prometheus (observability layer), so
        # Managed Prometheus stays off; system metrics still reach Cloud Monitoring.
        "monitoring_config": {
            "enable_components": ["SYSTEM_COMPONENTS"],
            "managed_prometheus": {"enabled": False},
        },
        "addons_config": {
            "http_load_balancing": {"disabled": False},
            "horizontal_pod_autoscaling": {"disabled": False},
            "gce_persistent_disk_csi_driver_config": {"enabled": True},
        },
        "resource_labels": {"app": "rayserve-gke", "stack": name},
    }


@dataclass
class GkeClusterArgs:
    stack: StackConfig
    """The validated stack config."""
    network: Network
    """The VPC and subnet the cluster's nodes and pods use."""


class GkeCluster(pulumi.ComponentResource):
    """The cluster, its node service account, and one node pool per configured pool."""

    cluster: gcp.container.Cluster
    node_service_account: gcp.serviceaccount.Account
    node_pools: dict[str, gcp.container.NodePool]

    def __init__(
        self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:cluster:GkeCluster", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        self.node_service_account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            account_id=f"{name}-nodes"[:30],
            display_name=f"GKE nodes of {name}",
            project=stack.gcp_project,
            opts=child,
        )
        member = self.node_service_account.email.apply(lambda email: f"serviceAccount:{email}")
        for role in NODE_PROJECT_ROLES:
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.rsplit('.', 1)[-1].lower()}",
                project=stack.gcp_project,
                role=role,
                member=member,
                opts=child,
            )
        self.cluster = gcp.container.Cluster(
            name,
            network=args.network.network.id,
            subnetwork=args.network.subnetwork.id,
            node_config={
                "service_account": self.node_service_account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
            },
            **cluster_spec(name, stack),
            opts=child,
        )
        # What `pulumi up` talks to (controlPlaneAccess): the DNS endpoint needs no CA.
        if stack.control_plane_access == "dns":
            self.control_plane_endpoint: pulumi.Output[str] = (
                self.cluster.control_plane_endpoints_config.apply(_dns_endpoint)
            )
            self.control_plane_ca: pulumi.Output[str] | None = None
        else:
            self.control_plane_endpoint = self.cluster.endpoint
            self.control_plane_ca = self.cluster.master_auth.cluster_ca_certificate
        self.node_pools = {}
        for pool in stack.node_pools:
            spec = node_pool_spec(name, stack, pool)
            spec["node_config"]["service_account"] = self.node_service_account.email
            self.node_pools[pool.name] = gcp.container.NodePool(
                f"{name}-{pool.name}", cluster=self.cluster.name, **spec, opts=child
            )
        self.register_outputs({"name": self.cluster.name, "endpoint": self.control_plane_endpoint})
