"""Layer 9: what keeps Ray pods up through voluntary disruptions (node auto-upgrades,
autoscaler scale-down, drains).

- PriorityClasses: Ray heads above workers above everything else of ours, so a full
  node evicts a worker before a head (a head holds the GCS and the Serve controller).
- PodDisruptionBudgets per service: heads never evicted voluntarily (GKE honours a PDB
  for up to an hour during an upgrade, then drains anyway; with GCS fault tolerance the
  head restarts without losing Serve state), workers one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import Service, StackConfig
from infra.constants import PROJECT

HEAD_PRIORITY = 1_000_000
WORKER_PRIORITY = 100_000


def priority_class_name(namespace: str, role: str) -> str:
    """Cluster-wide names, one set per Ray namespace: two stacks sharing a cluster (they
    must use two namespaces) keep their own."""
    return f"{PROJECT}-{namespace}-ray-{role}"


def priority_classes(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": priority_class_name(namespace, role)},
            "value": value,
            "globalDefault": False,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": f"Ray {role} pods in namespace {namespace}",
        }
        for role, value in (("head", HEAD_PRIORITY), ("worker", WORKER_PRIORITY))
    ]


def pod_selector(service: Service, role: str) -> dict[str, str]:
    """The labels the service's Ray pods carry (infra/rayservice/manifest.py)."""
    return {
        "app.kubernetes.io/instance": service.name,
        "app.kubernetes.io/component": f"ray-{role}",
    }


def disruption_budgets(service: Service, namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": f"{service.name}-ray-{role}", "namespace": namespace},
            "spec": {
                "maxUnavailable": unavailable,
                "selector": {"matchLabels": pod_selector(service, role)},
                # A pod that never got Ready may always go (it serves nothing).
                "unhealthyPodEvictionPolicy": "AlwaysAllow",
            },
        }
        for role, unavailable in (("head", 0), ("worker", 1))
    ]


@dataclass
class RayDisruptionArgs:
    stack: StackConfig
    """The validated stack config."""


class RayDisruption(pulumi.ComponentResource):
    """The PriorityClasses and every service's PodDisruptionBudgets."""

    def __init__(
        self, name: str, args: RayDisruptionArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:ray:Disruption", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for obj in priority_classes(args.stack.namespace):
            k8s.scheduling.v1.PriorityClass(
                f"{name}-{obj['metadata']['name']}",
                metadata=obj["metadata"],
                value=obj["value"],
                global_default=obj["globalDefault"],
                preemption_policy=obj["preemptionPolicy"],
                description=obj["description"],
                opts=child,
            )
        for service in args.stack.services:
            for obj in disruption_budgets(service, args.stack.namespace):
                k8s.policy.v1.PodDisruptionBudget(
                    f"{name}-{obj['metadata']['name']}",
                    metadata=obj["metadata"],
                    spec=obj["spec"],
                    opts=child,
                )
        self.register_outputs({})
