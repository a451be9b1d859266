"""Does every pod fit a node of its pool, and every Serve replica a Ray worker pod?

Answered from the machine catalog (`machines`) and the config alone, so a worker that
could never schedule, or a replica Ray could never place, fails `pulumi preview` with
the key named instead of sitting Pending in the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.config import machines
from infra.config.errors import ConfigIssue
from infra.config.fields import quantity_value
from infra.config.models import SYSTEM_POOL, Deployment, NodePool, Service, StackConfig
from infra.constants import LOG_SHIPPER_REQUESTS

# Ray keeps 30% of a node's memory for its object store by default; the rest is the
# `memory` resource replicas reserve from.
RAY_OBJECT_STORE_SHARE = 0.3
# Below these a Ray container is OOM-killed starting up (GCS, dashboard, Serve
# controller on the head; raylet and agent on a worker) before serving anything.
MIN_HEAD_MEMORY = 2 * machines.GIB
MIN_WORKER_MEMORY = 1 * machines.GIB


def _gib(amount: float) -> str:
    return f"{amount / machines.GIB:.1f}Gi"


def _pod_fits(
    stack: StackConfig, pool: NodePool, cpu: str, memory: str, *, at: str, what: str
) -> list[ConfigIssue]:
    machine = machines.shape(pool.machine_type)
    if machine is None:
        return []  # reported against the pool
    shipper_cpu = quantity_value(LOG_SHIPPER_REQUESTS["cpu"]) if stack.log_shipping else 0.0
    shipper_memory = quantity_value(LOG_SHIPPER_REQUESTS["memory"]) if stack.log_shipping else 0.0
    free_cpu = machines.allocatable_cpu(machine) - shipper_cpu
    free_memory = machines.allocatable_memory(machine) - shipper_memory
    issues = []
    if quantity_value(cpu) > free_cpu:
        issues.append(
            ConfigIssue(
                f"{at}.cpu",
                f"{what} asks {cpu} CPU but a {pool.machine_type} node of pool '{pool.name}' "
                f"leaves pods {free_cpu:.2f} (GKE's reservation, its DaemonSets"
                f"{' and the log shipper' if stack.log_shipping else ''}); allowed: "
                f"cpu <= {free_cpu:.2f}, or a larger machineType",
            )
        )
    if quantity_value(memory) > free_memory:
        issues.append(
            ConfigIssue(
                f"{at}.memory",
                f"{what} asks {memory} but a {pool.machine_type} node of pool '{pool.name}' "
                f"leaves pods {_gib(free_memory)}; allowed: memory <= {_gib(free_memory)}, "
                "or a larger machineType",
            )
        )
    return issues


def _floor(memory: str, minimum: float, at: str, what: str) -> list[ConfigIssue]:
    if quantity_value(memory) < minimum:
        return [
            ConfigIssue(
                f"{at}.memory",
                f"{memory} is too little for a Ray {what} (it is OOM-killed starting up); "
                f"allowed: at least {_gib(minimum)}",
            )
        ]
    return []


@dataclass(frozen=True)
class _Pod:
    """One worker group's pod as Ray sees it."""

    cpu: float
    ray_memory: float
    """Ray's `memory` resource: what replicas may reserve after the object store."""
    gpus: int
    max_pods: int
    advertised: dict[str, float]
    """Its custom placement resources (`pool:<name>`, `accelerator:<gpuType>`)."""


def _max_replicas(deployment: Deployment) -> int:
    if deployment.autoscaling is not None:
        return deployment.autoscaling.max_replicas
    return deployment.num_replicas or 1


def _replica_issues(stack: StackConfig, service: Service, at: str) -> list[ConfigIssue]:
    """Each replica fits one worker pod; all replicas at their max fit all workers."""
    groups: list[_Pod] = []
    for group in service.worker_groups:
        pool = stack.pool(group.node_pool)
        if pool is None or pool.name == SYSTEM_POOL:
            continue  # reported against the group
        try:
            gpus = stack.gpus_per_node(pool)
        except ValueError:
            continue  # reported against the pool
        ray_memory = quantity_value(group.memory) * (1 - RAY_OBJECT_STORE_SHARE)
        groups.append(
            _Pod(
                quantity_value(group.cpu), ray_memory, gpus, group.max_replicas,
                stack.pool_resources(pool),
            )
        )  # fmt: skip
    if not groups:
        return []
    issues = []
    demand_cpu = demand_gpu = 0.0
    gpus_reported = False
    for j, app in enumerate(service.apps):
        for k, dep in enumerate(app.deployments):
            dat = f"{at}.apps[{j}].deployments[{k}].rayActorOptions"
            options = dep.ray_actor_options
            memory = quantity_value(options.memory) if options.memory else 0.0
            demand_cpu += _max_replicas(dep) * options.num_cpus
            demand_gpu += _max_replicas(dep) * options.num_gpus
            # GPU counts are checked against the GPU nodes elsewhere (`checks`).
            placed = [g for g in groups if all(k in g.advertised for k in options.placement)]
            if not placed:
                continue  # the pinning itself is reported (`checks`)
            with_gpus = [g for g in placed if options.num_gpus <= g.gpus]
            fits = [g for g in with_gpus if options.num_cpus <= g.cpu and memory <= g.ray_memory]
            gpus_reported = gpus_reported or not with_gpus
            if with_gpus and not fits:
                largest = max(with_gpus, key=lambda g: (g.cpu, g.ray_memory))
                issues.append(
                    ConfigIssue(
                        dat,
                        f"one replica asks numCpus {options.num_cpus:g}, numGpus "
                        f"{options.num_gpus:g}, memory {options.memory or 0}, but no worker "
                        f"group's pod has that much (largest: {largest.cpu:g} CPU, "
                        f"{largest.gpus} GPU, {_gib(largest.ray_memory)} for replicas after Ray's "
                        "object store); allowed: a replica within one worker pod, or a "
                        "larger workerGroups cpu/memory",
                    )
                )
    if issues:
        return issues  # one replica does not fit: the totals would only repeat it
    supply_cpu = sum(g.cpu * g.max_pods for g in groups)
    supply_gpu = sum(g.gpus * g.max_pods for g in groups)
    totals = [("CPU", demand_cpu, supply_cpu)]
    if not gpus_reported:
        totals.append(("GPU", demand_gpu, supply_gpu))
    for what, demand, supply in totals:
        if demand > supply:
            issues.append(
                ConfigIssue(
                    f"{at}.workerGroups",
                    f"at their maximum replicas the service's deployments ask {demand:g} "
                    f"{what} but its worker groups at maxReplicas give {supply:g}; allowed: "
                    f"worker groups with at least {demand:g} {what} in all, or fewer "
                    "replicas",
                )
            )
    return issues


def sizing_issues(stack: StackConfig) -> list[ConfigIssue]:
    issues = []
    system = stack.pool(SYSTEM_POOL)
    for i, service in enumerate(stack.services):
        at = f"services[{i}]"
        head = service.head
        issues += _floor(head.memory, MIN_HEAD_MEMORY, f"{at}.head", "head")
        if system is not None:
            issues += _pod_fits(
                stack, system, head.cpu, head.memory, at=f"{at}.head", what="the Ray head"
            )
        for j, group in enumerate(service.worker_groups):
            gat = f"{at}.workerGroups[{j}]"
            issues += _floor(group.memory, MIN_WORKER_MEMORY, gat, "worker")
            pool = stack.pool(group.node_pool)
            if pool is not None and pool.name != SYSTEM_POOL:
                issues += _pod_fits(
                    stack, pool, group.cpu, group.memory, at=gat, what="a Ray worker pod"
                )
        issues += _replica_issues(stack, service, at)
    return issues
