"""What several layers share: names, labels, ports, pinned charts, stack predicates.

Defined once here so no layer imports another only for a constant (that is how
import cycles between layers start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the predicates read a StackConfig; config itself imports this module
    from infra.config.models import StackConfig

PROJECT = "rayserve-gke"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Node labels the Ray pods and the operators select on.
POOL_LABEL = "rayserve-gke/pool"
ROLE_LABEL = "rayserve-gke/role"

# Ports.
SERVE_PORT = 8000  # Serve's HTTP port on every Ray pod
DASHBOARD_PORT = 8265  # Ray dashboard on the head
METRICS_PORT = 8080  # Ray's metrics export port on every Ray pod
REDIS_PORT = 6379
REDIS_EXPORTER_PORT = 9121

# Namespaces and releases of the platform's operators.
OPERATOR_NAMESPACE = "kuberay-system"
GPU_OPERATOR_NAMESPACE = "gpu-operator"
MONITORING_NAMESPACE = "monitoring"
KPS_RELEASE = "kube-prometheus-stack"

# Where Google's front ends and health checkers connect from (global and classic LBs).
GOOGLE_FRONTEND_RANGES = ["35.191.0.0/16", "130.211.0.0/22"]


@dataclass(frozen=True)
class PinnedChart:
    """A Helm chart at one version from one repository (values checked against the
    pinned chart's own values.yaml in ../shared/reference)."""

    chart: str
    version: str
    repository: str


KUBERAY_CHART = PinnedChart(
    "kuberay-operator", "1.7.0", "https://ray-project.github.io/kuberay-helm/"
)
GPU_OPERATOR_CHART = PinnedChart("gpu-operator", "v26.7.0", "https://helm.ngc.nvidia.com/nvidia")
KPS_CHART = PinnedChart(
    "kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"
)


def is_global(stack: StackConfig) -> bool:
    """The stack's Gateway is Google's global external load balancer (Cloud Armor, the
    classic front-end ranges)."""
    return stack.gateway_class == "gke-l7-global-external-managed"


def has_gpu_pools(stack: StackConfig) -> bool:
    """Any GPU node pool: the GPU Operator, GPU dashboards and alerts follow from it."""
    return any(pool.gpu_type for pool in stack.node_pools)


# The log shipper beside every Ray container (its requests count against the node).
LOG_SHIPPER_REQUESTS = {"cpu": "20m", "memory": "64Mi"}
LOG_SHIPPER_MEMORY_LIMIT = "128Mi"
