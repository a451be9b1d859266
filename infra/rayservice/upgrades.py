"""Layer 9: tell the operator before `pulumi up` makes KubeRay replace a Ray cluster.

A change to a RayService's `serveConfigV2` is applied in place by Serve. A change to its
`rayClusterConfig` (image, resources, worker groups, head, Redis, ...) makes KubeRay
start a whole new cluster and switch traffic once it is ready: until then both run, so
the node pools must hold both. The program compares this run's `rayClusterConfig` of
every service with the one the stack exported last time and warns (or, with
`failOnClusterReplacement`, fails) naming the service, the fields that changed and the
nodes the new cluster needs at peak against each pool's `maxNodes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.config import Service, StackConfig, WorkerGroup, gpu_catalog, quantity_value

IN_PLACE = "serveConfigV2 (apps, routes, replicas, autoscaling, user_config, args)"


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        paths = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else str(key)
            paths += changed_paths(old.get(key), new.get(key), path)
        return paths
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True))
                for p in changed_paths(a, b, f"{prefix}[{i}]")]  # fmt: skip
    return [] if old == new else [prefix or "(all)"]


def pods_per_node(stack: StackConfig, group: WorkerGroup) -> int:
    """How many of a group's worker pods one node of its pool holds."""
    pool = stack.pool(group.node_pool)
    assert pool is not None  # validated config
    if pool.gpu_type:
        return 1  # a worker takes every GPU of its node
    cpus = gpu_catalog.vcpus(pool.machine_type)
    if cpus is None:
        return 1
    return max(1, math.floor((cpus - 0.5) / quantity_value(group.cpu)))


@dataclass(frozen=True)
class PoolPeak:
    pool: str
    new_cluster_nodes: int
    old_cluster_nodes: int
    max_nodes: int

    @property
    def fits(self) -> bool:
        return self.new_cluster_nodes + self.old_cluster_nodes <= self.max_nodes


def peak_nodes(stack: StackConfig, service: Service) -> list[PoolPeak]:
    """Per pool: nodes each cluster may need at its maximum, and the pool's cap."""
    peaks = []
    for group in service.worker_groups:
        pool = stack.pool(group.node_pool)
        assert pool is not None
        nodes = math.ceil(group.max_replicas / pods_per_node(stack, group))
        peaks.append(PoolPeak(pool.name, nodes, nodes, pool.max_nodes))
    return peaks


def replacement_message(stack: StackConfig, service: Service, changes: list[str]) -> str:
    strategy = service.upgrade_strategy.type
    shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
    if strategy == "None":
        return (
            f"RayService '{service.name}': rayClusterConfig changed ({shown}) but "
            "upgradeStrategy is None, so KubeRay will NOT roll it out; only changes to "
            f"{IN_PLACE} apply."
        )
    lines = [
        f"RayService '{service.name}' will start a NEW Ray cluster (upgradeStrategy "
        f"{strategy}) because rayClusterConfig changed: {shown}. Changes to {IN_PLACE} "
        "apply in place; these do not."
    ]
    for peak in peak_nodes(stack, service):
        total = peak.new_cluster_nodes + peak.old_cluster_nodes
        verdict = (
            "fits" if peak.fits else "EXCEEDS the pool: raise maxNodes or upgrade incrementally"
        )
        lines.append(
            f"  pool '{peak.pool}': up to {peak.new_cluster_nodes} more node(s) for the new "
            f"cluster while the old one holds up to {peak.old_cluster_nodes}: {total} of "
            f"maxNodes {peak.max_nodes} ({verdict})"
        )
    return "\n".join(lines)


def replacement_reports(
    stack: StackConfig, previous: dict[str, Any] | None, current: dict[str, Any]
) -> list[str]:
    """One message per service whose Ray cluster this update replaces (or would)."""
    if not previous:
        return []  # first deployment: nothing to replace
    reports = []
    for service in stack.services:
        before = previous.get(service.name)
        if before is None:
            continue  # a new service: created, not replaced
        changes = changed_paths(before, current[service.name])
        if changes:
            reports.append(replacement_message(stack, service, changes))
    return reports


class ClusterReplacementError(RuntimeError):
    """`failOnClusterReplacement` is set and this update would replace a Ray cluster."""


@dataclass
class UpgradeGuardArgs:
    stack: StackConfig
    """The validated stack config."""
    cluster_configs: dict[str, Any]
    """Service name -> this run's rayClusterConfig (an Output)."""


def check_replacements(
    stack: StackConfig, previous: dict[str, Any] | None, current: dict[str, Any]
) -> list[str]:
    """Warn about every replacement; raise when the stack forbids them."""
    reports = replacement_reports(stack, previous, current)
    for report in reports:
        pulumi.log.warn(report)
    if reports and stack.fail_on_cluster_replacement:
        raise ClusterReplacementError(
            "failOnClusterReplacement is set and this update replaces Ray clusters:\n"
            + "\n".join(reports)
        )
    return reports


class UpgradeGuard(pulumi.ComponentResource):
    """Reads the stack's own previous outputs and checks this run's clusters against them."""

    current: pulumi.Output[dict[str, Any]]
    reports: pulumi.Output[list[str]]

    def __init__(
        self, name: str, args: UpgradeGuardArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:release:UpgradeGuard", name, None, opts)
        own = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
        reference = pulumi.StackReference(
            f"{name}-previous", stack_name=own, opts=pulumi.ResourceOptions(parent=self)
        )
        self.current = pulumi.Output.all(**args.cluster_configs)
        self.reports = pulumi.Output.all(
            reference.get_output("rayClusterConfigs"), self.current
        ).apply(lambda values: check_replacements(args.stack, values[0], values[1]))
        self.register_outputs({"rayClusterConfigs": self.current})
