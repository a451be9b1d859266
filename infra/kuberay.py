"""Layer 6: the KubeRay operator and its CRDs, pinned.

`helm.v4.Chart` renders the chart inside the program, so every CRD becomes a tracked
resource of its own: RayServices depend on the chart and are never previewed or created
before their CRDs exist. The kuberay-operator chart has no Helm hooks, so v4's not
running hooks costs nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.constants import KUBERAY_CHART, OPERATOR_NAMESPACE, ROLE_LABEL
from infra.pod_security import container_security_context, pod_security_context

# The operator image's user (distroless `nonroot`, `USER 65532:65532` in its Dockerfile).
OPERATOR_UID = 65532


def operator_namespace(stack: StackConfig) -> str:
    """Namespace-scoped installs run the operator beside the RayServices."""
    return stack.namespace if stack.kuberay_single_namespace else OPERATOR_NAMESPACE


def kuberay_values(stack: StackConfig) -> dict[str, Any]:
    """Chart values; every key exists in the pinned chart's values.yaml (a test checks)."""
    values: dict[str, Any] = {
        "nodeSelector": {ROLE_LABEL: "system"},
        # The chart's own container defaults are already restricted; stated here so a
        # chart upgrade cannot loosen them unnoticed, with the pod-level user and seccomp.
        "podSecurityContext": pod_security_context(OPERATOR_UID, OPERATOR_UID),
        "securityContext": container_security_context(),
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        "metrics": {
            "enabled": True,
            # Needs kube-prometheus-stack's ServiceMonitor CRD: installed after it.
            "serviceMonitor": {
                "enabled": stack.monitoring,
                "interval": "30s",
                "additionalLabels": {"release": "kube-prometheus-stack"},
            },
        },
    }
    if stack.kuberay_single_namespace:
        values["singleNamespaceInstall"] = True
        values["watchNamespace"] = [stack.namespace]
    return values


@dataclass
class KubeRayArgs:
    stack: StackConfig
    """The validated stack config."""


class KubeRay(pulumi.ComponentResource):
    """The RayServices' namespace, the operator's, CRDs and operator.

    `chart` is what RayServices depend on (CRDs and a running operator).
    """

    chart: k8s.helm.v4.Chart
    namespace: k8s.core.v1.Namespace

    def __init__(
        self, name: str, args: KubeRayArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:ray:KubeRay", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": args.stack.namespace}, opts=child
        )
        namespace = operator_namespace(args.stack)
        deps: list[pulumi.Resource] = [self.namespace]
        if namespace == OPERATOR_NAMESPACE:
            deps.append(
                k8s.core.v1.Namespace(
                    f"{name}-kuberay-ns", metadata={"name": namespace}, opts=child
                )
            )
        self.chart = k8s.helm.v4.Chart(
            f"{name}-kuberay",
            chart=KUBERAY_CHART.chart,
            version=KUBERAY_CHART.version,
            repository_opts={"repo": KUBERAY_CHART.repository},
            namespace=namespace,
            values=kuberay_values(args.stack),
            opts=pulumi.ResourceOptions(parent=self, depends_on=deps),
        )
        self.register_outputs({})
