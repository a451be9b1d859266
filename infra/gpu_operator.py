"""Layer 7: the NVIDIA GPU Operator on GKE, in either driver mode.

- `gke`: GKE installs the driver (node pools ask for `LATEST`), and its device plugin
  serves `nvidia.com/gpu`; the operator runs only DCGM (metrics), its exporter and
  feature discovery, reading the driver where GKE puts it.
- `operator`: node pools disable GKE's driver and device plugin; the operator installs
  the driver, the container toolkit and the device plugin on Ubuntu nodes.

Pod security: the exception to the restricted profile every other pod runs under. The
driver, container toolkit, device plugin, validator and DCGM daemonsets are privileged by
nature (they load kernel modules, write the host's container runtime config, open every
GPU device) and the chart exposes no securityContext for them: the operator sets them.
They run alone in the `gpu-operator` namespace, apart from every workload of ours. Of
what the chart does expose, resources are set where there is evidence of need
(dcgm-exporter); the other operands keep the chart's defaults.

The chart has Helm hooks (a CRD upgrade job on upgrade, CRD and GPUCluster cleanup jobs
on delete). `helm.v3.Release` runs a real Helm release, hooks included, so upgrades keep
the operator's CRDs current and `pulumi destroy` cleans up; `helm.v4.Chart` would skip
those jobs silently.

GKE runs pods of the `system-node-critical`/`system-cluster-critical` PriorityClasses
outside `kube-system` only where a ResourceQuota admits them: without the quota the
operator's daemonsets are never created and the install hangs until Helm times out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.constants import GPU_OPERATOR_CHART, GPU_OPERATOR_NAMESPACE, ROLE_LABEL

GKE_DRIVER_DIR = "/home/kubernetes/bin/nvidia"
DCGM_EXPORTER_MEMORY_LIMIT = "1Gi"


def resource_quota_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpu-operator-critical-pods", "namespace": GPU_OPERATOR_NAMESPACE},
        "spec": {
            "hard": {"pods": "100"},
            "scopeSelector": {
                "matchExpressions": [
                    {
                        "operator": "In",
                        "scopeName": "PriorityClass",
                        "values": ["system-node-critical", "system-cluster-critical"],
                    }
                ]
            },
        },
    }


def gpu_operator_values(stack: StackConfig) -> dict[str, Any]:
    """Chart values for the stack's driver mode; keys exist in the pinned values.yaml."""
    operator_mode = stack.gpu_driver == "operator"
    values: dict[str, Any] = {
        "operator": {"nodeSelector": {ROLE_LABEL: "system"}},
        "driver": {"enabled": operator_mode},
        "toolkit": {"enabled": operator_mode},
        "devicePlugin": {"enabled": operator_mode},
        "dcgmExporter": {
            "enabled": True,
            # Measured at 400-500 MiB working set, OOM-killed at a 512Mi limit on 8-GPU
            # nodes (NVIDIA/dcgm-exporter#609, pytorch/ci-infra#1011): a 1Gi limit, and
            # the Go heap capped below it so the GC runs before the kernel kills.
            "resources": {
                "requests": {"cpu": "100m", "memory": "512Mi"},
                "limits": {"memory": DCGM_EXPORTER_MEMORY_LIMIT},
            },
            "env": [{"name": "GOMEMLIMIT", "value": "820MiB"}],
            # DCGM metrics for the GPU dashboard and alerts; needs the ServiceMonitor CRD.
            "serviceMonitor": {"enabled": stack.monitoring},
        },
        "gfd": {"enabled": True},
        "nfd": {"enabled": True},
        "migManager": {"enabled": False},
    }
    if not operator_mode:
        values["hostPaths"] = {"driverInstallDir": GKE_DRIVER_DIR}
    return values


@dataclass
class GpuOperatorArgs:
    stack: StackConfig
    """The validated stack config."""


class GpuOperator(pulumi.ComponentResource):
    """Namespace with the PriorityClass-scoped quota, then the chart as a Helm release."""

    release: k8s.helm.v3.Release

    def __init__(
        self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:gpu:GpuOperator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            f"{name}-gpu-operator-ns", metadata={"name": GPU_OPERATOR_NAMESPACE}, opts=child
        )
        quota = resource_quota_manifest()
        resource_quota = k8s.core.v1.ResourceQuota(
            f"{name}-gpu-operator-quota",
            metadata=quota["metadata"],
            spec=quota["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-gpu-operator",
            chart=GPU_OPERATOR_CHART.chart,
            version=GPU_OPERATOR_CHART.version,
            repository_opts={"repo": GPU_OPERATOR_CHART.repository},
            namespace=GPU_OPERATOR_NAMESPACE,
            values=gpu_operator_values(args.stack),
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[resource_quota]),
        )
        self.register_outputs({})
