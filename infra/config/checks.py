"""Checks that span keys: duplicates, references between keys, machine/GPU pairings,
production rules. Each returns ConfigIssues; an empty list means deployable."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from infra.config import gpu_catalog, machines
from infra.config.apps import app_issues
from infra.config.errors import ConfigIssue
from infra.config.fields import GPU_TYPE_NAMES, normalize_route_prefix, quantity_value
from infra.config.models import (
    ACCELERATOR_RESOURCE,
    SYSTEM_POOL,
    App,
    NodePool,
    StackConfig,
    UpgradeStrategy,
)
from infra.config.sizing import sizing_issues
from infra.constants import PROJECT_ROOT


def _duplicates(items: Iterable[tuple[str, str]], what: str, note: str = "") -> list[ConfigIssue]:
    """Issues for every (path, key) whose key was already seen at an earlier path."""
    seen: dict[str, str] = {}
    issues = []
    for path, key in items:
        if key in seen:
            issues.append(
                ConfigIssue(path, f"duplicate {what} '{key}' (first at {seen[key]}){note}")
            )
        else:
            seen[key] = path
    return issues


def _node_pool_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = _duplicates(
        ((f"nodePools[{i}].name", p.name) for i, p in enumerate(cfg.node_pools)),
        "node pool name",
    )
    if cfg.pool(SYSTEM_POOL) is None:
        issues.append(
            ConfigIssue(
                "nodePools",
                f"a '{SYSTEM_POOL}' pool is required (on-demand, no GPUs): it runs the "
                "Ray heads, the operators and monitoring",
            )
        )
    for i, pool in enumerate(cfg.node_pools):
        at = f"nodePools[{i}]"
        if pool.min_nodes > pool.max_nodes:
            issues.append(
                ConfigIssue(
                    f"{at}.minNodes",
                    f"minNodes {pool.min_nodes} > maxNodes {pool.max_nodes}; "
                    "allowed: 0 <= minNodes <= maxNodes",
                )
            )
        family = gpu_catalog.machine_family(pool.machine_type)
        if family is None:
            issues.append(
                ConfigIssue(
                    f"{at}.machineType",
                    f"'{pool.machine_type}' is not a machine type "
                    "(e.g. e2-standard-8, g2-standard-8, a3-highgpu-8g)",
                )
            )
            continue
        if machines.shape(pool.machine_type) is None:
            near = machines.near_machine_types(pool.machine_type)
            allowed = ", ".join(near) if near else "families " + ", ".join(machines.FAMILIES)
            issues.append(
                ConfigIssue(
                    f"{at}.machineType",
                    f"'{pool.machine_type}' is not a machine type this stack knows the size "
                    f"of; allowed: {allowed}",
                )
            )
            continue
        if pool.name == SYSTEM_POOL and (pool.spot or pool.gpu_type):
            issues.append(
                ConfigIssue(
                    f"{at}.spot" if pool.spot else f"{at}.gpuType",
                    "the system pool must be on-demand and without GPUs "
                    "(allowed: spot: false, no gpuType)",
                )
            )
        if pool.gpu_type is None:
            if pool.gpu_count is not None:
                issues.append(
                    ConfigIssue(
                        f"{at}.gpuCount",
                        "gpuCount needs a gpuType; allowed gpuType: " + ", ".join(GPU_TYPE_NAMES),
                    )
                )
            if family in gpu_catalog.GPU_ONLY_FAMILIES:
                issues.append(
                    ConfigIssue(
                        f"{at}.gpuType",
                        f"{pool.machine_type} always carries GPUs: set gpuType "
                        f"(allowed: {', '.join(GPU_TYPE_NAMES)})",
                    )
                )
            continue
        try:
            gpu_catalog.gpus_per_node(pool.machine_type, pool.gpu_type, pool.gpu_count)
        except gpu_catalog.PairingError as exc:
            key = "gpuCount" if "count" in str(exc) and pool.gpu_count else "machineType"
            issues.append(ConfigIssue(f"{at}.{key}", str(exc)))
    return issues


def _service_issues(cfg: StackConfig, project_root: Path) -> list[ConfigIssue]:
    issues = _duplicates(
        ((f"services[{i}].name", s.name) for i, s in enumerate(cfg.services)), "service name"
    )
    for i, service in enumerate(cfg.services):
        at = f"services[{i}]"
        dockerfile = project_root / "images" / service.image_dir / "Dockerfile"
        if not dockerfile.is_file():
            available = sorted(
                p.parent.name for p in (project_root / "images").glob("*/Dockerfile")
            )
            issues.append(
                ConfigIssue(
                    f"{at}.image",
                    f"no images/{service.image_dir}/Dockerfile; "
                    f"allowed: {', '.join(available) or '(none yet)'}",
                )
            )
        issues += _duplicates(
            (
                (f"{at}.workerGroups[{j}].nodePool", g.node_pool)
                for j, g in enumerate(service.worker_groups)
            ),
            "worker group node pool",
        )
        worker_pools = []
        for j, group in enumerate(service.worker_groups):
            gat = f"{at}.workerGroups[{j}]"
            pool = cfg.pool(group.node_pool)
            usable = [p.name for p in cfg.node_pools if p.name != SYSTEM_POOL]
            if pool is None or pool.name == SYSTEM_POOL:
                issues.append(
                    ConfigIssue(
                        f"{gat}.nodePool",
                        f"'{group.node_pool}' is not a worker node pool; "
                        f"allowed: {', '.join(usable) or '(define one in nodePools)'}",
                    )
                )
            else:
                worker_pools.append(pool)
            if group.min_replicas > group.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{gat}.minReplicas",
                        f"minReplicas {group.min_replicas} > maxReplicas "
                        f"{group.max_replicas}; allowed: minReplicas <= maxReplicas",
                    )
                )
        issues += _upgrade_issues(service.upgrade_strategy, f"{at}.upgradeStrategy")
        issues += _duplicates(
            ((f"{at}.secretEnv[{j}]", n) for j, n in enumerate(service.secret_env)), "variable"
        )
        issues += [
            ConfigIssue(
                f"{at}.secretEnv[{j}]",
                f"'{n}' is also in env; allowed: each variable in env or secretEnv, not both",
            )
            for j, n in enumerate(service.secret_env)
            if n in service.env
        ]
        gpu_pools = [p for p in worker_pools if p.gpu_type]
        capacities = [_safe_gpus(cfg, p) for p in gpu_pools]
        # A pool with an invalid GPU pairing is reported there; its capacity is unknown.
        gpu_capacity = (
            None if None in capacities else max((c for c in capacities if c is not None), default=0)
        )
        advertised: dict[str, float] = {}
        for pool in worker_pools:
            advertised |= cfg.pool_resources(pool)
        for j, app in enumerate(service.apps):
            issues += _app_issues(app, f"{at}.apps[{j}]", gpu_capacity)
            issues += _placement_issues(app, f"{at}.apps[{j}]", advertised)
    return issues


def _safe_gpus(cfg: StackConfig, pool: NodePool) -> int | None:
    try:
        return cfg.gpus_per_node(pool)
    except gpu_catalog.PairingError:
        return None  # reported against the pool already


# What KubeRay 1.7 does with NewClusterWithIncrementalUpgrade (read from its RayService
# controller: createGateway/createHTTPRoute, BuildServeService) cannot go through this
# stack's edge; see the README's rollout table.
INCREMENTAL_REFUSED = (
    "NewClusterWithIncrementalUpgrade is not supported: KubeRay 1.7 shifts traffic only on "
    "a Gateway and HTTPRoute it creates itself (clusterUpgradeOptions cannot name this "
    "stack's Gateway, so that would be a second load balancer without its TLS, Cloud Armor "
    "and IAP) and renames the Serve Service per cluster, so public traffic would not follow "
    "the canary; allowed: NewCluster (the new cluster takes the traffic once it is ready; "
    "failOnClusterReplacement checks both fit), None"
)


def _upgrade_issues(strategy: UpgradeStrategy, at: str) -> list[ConfigIssue]:
    if strategy.type == "NewClusterWithIncrementalUpgrade":
        return [ConfigIssue(f"{at}.type", INCREMENTAL_REFUSED)]
    return []


def _app_issues(app: App, at: str, gpu_capacity: int | None) -> list[ConfigIssue]:
    issues = app_issues(app, at)
    issues += _duplicates(
        ((f"{at}.deployments[{k}].name", d.name) for k, d in enumerate(app.deployments)),
        "deployment name",
    )
    for k, dep in enumerate(app.deployments):
        dat = f"{at}.deployments[{k}]"
        if dep.num_replicas is not None and dep.autoscaling is not None:
            issues.append(ConfigIssue(dat, "set numReplicas or autoscaling, not both"))
        if dep.autoscaling is not None:
            scale = dep.autoscaling
            if scale.min_replicas > scale.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{dat}.autoscaling.minReplicas",
                        f"minReplicas {scale.min_replicas} > maxReplicas "
                        f"{scale.max_replicas}; allowed: minReplicas <= maxReplicas",
                    )
                )
            initial = scale.initial_replicas
            if initial is not None and not scale.min_replicas <= initial <= scale.max_replicas:
                issues.append(
                    ConfigIssue(
                        f"{dat}.autoscaling.initialReplicas",
                        f"initialReplicas {initial} is outside "
                        f"[minReplicas {scale.min_replicas}, maxReplicas {scale.max_replicas}]",
                    )
                )
        batch = dep.user_config.get("max_batch_size")
        if (
            isinstance(batch, int)
            and not isinstance(batch, bool)
            and dep.max_ongoing_requests < batch
        ):
            issues.append(
                ConfigIssue(
                    f"{dat}.maxOngoingRequests",
                    f"maxOngoingRequests {dep.max_ongoing_requests} < userConfig."
                    f"max_batch_size {batch}: a replica could never fill a batch; "
                    f"allowed: maxOngoingRequests >= {batch}",
                )
            )
        gpus = dep.ray_actor_options.num_gpus
        if gpu_capacity is None:
            continue
        if gpus > 0 and gpu_capacity == 0:
            issues.append(
                ConfigIssue(
                    f"{dat}.rayActorOptions.numGpus",
                    f"asks for {gpus:g} GPU(s) but the service has no GPU worker group; "
                    "allowed: numGpus 0, or add a workerGroup on a pool with a gpuType",
                )
            )
        elif gpus > gpu_capacity > 0:
            issues.append(
                ConfigIssue(
                    f"{dat}.rayActorOptions.numGpus",
                    f"asks for {gpus:g} GPUs but the service's largest GPU node has "
                    f"{gpu_capacity}; allowed: numGpus <= {gpu_capacity}",
                )
            )
    return issues


def _placement_issues(app: App, at: str, advertised: dict[str, float]) -> list[ConfigIssue]:
    """Pinned deployments ask only for resources some worker group of theirs advertises."""
    issues = []
    for k, dep in enumerate(app.deployments):
        options = dep.ray_actor_options
        for key, amount in options.placement.items():
            where = f"{at}.deployments[{k}].rayActorOptions." + (
                "accelerator"
                if key == f"{ACCELERATOR_RESOURCE}{options.accelerator}"
                else f"resources.{key}"
            )
            if key not in advertised:
                issues.append(
                    ConfigIssue(
                        where,
                        f"no worker group of this service advertises '{key}'; allowed: "
                        f"{', '.join(sorted(advertised)) or '(no worker groups)'}",
                    )
                )
            elif not 0 < amount <= advertised[key]:
                issues.append(
                    ConfigIssue(
                        where, f"amount {amount:g}; allowed: 0 < amount <= {advertised[key]:g}"
                    )
                )
    return issues


def _stack_wide_app_issues(cfg: StackConfig) -> list[ConfigIssue]:
    located = [
        (f"services[{i}].apps[{j}]", app)
        for i, service in enumerate(cfg.services)
        for j, app in enumerate(service.apps)
    ]
    return _duplicates(((f"{at}.name", app.name) for at, app in located), "app name") + _duplicates(
        ((f"{at}.routePrefix", normalize_route_prefix(app.route_prefix)) for at, app in located),
        "route prefix",
        " ('/a' and '/a/' are the same route); allowed: one app per route prefix",
    )


def _cluster_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    if cfg.production and cfg.redis == "none":
        issues.append(
            ConfigIssue(
                "redis",
                "a production stack needs GCS fault tolerance; allowed: memorystore, "
                "in-cluster ('none' is for dev stacks only)",
            )
        )
    if cfg.cluster_mode == "gke" and not re.fullmatch(
        r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$", cfg.gcp_project
    ):
        issues.append(
            ConfigIssue(
                "gcpProject",
                f"'{cfg.gcp_project}' is not a GCP project id (6-30 lowercase letters, "
                "digits and '-'); required when clusterMode is gke",
            )
        )
    if cfg.production and cfg.redis == "memorystore" and cfg.redis_tier != "STANDARD_HA":
        issues.append(
            ConfigIssue(
                "redisTier",
                "a production GCS store needs a replica and failover; allowed: STANDARD_HA "
                "(BASIC is for dev stacks: a Memorystore restart loses the GCS state)",
            )
        )
    if quantity_value(cfg.redis_memory) < REDIS_MIN_MEMORY:
        issues.append(
            ConfigIssue("redisMemory", f"{cfg.redis_memory} is too small; allowed: at least 256Mi")
        )
    if quantity_value(cfg.redis_volume_size) < 2 * quantity_value(cfg.redis_memory):
        issues.append(
            ConfigIssue(
                "redisVolumeSize",
                f"{cfg.redis_volume_size} cannot hold an append-only file of {cfg.redis_memory} "
                "and its rewrite; allowed: at least twice redisMemory",
            )
        )
    if cfg.redis == "memorystore" and cfg.cluster_mode != "gke":
        issues.append(
            ConfigIssue(
                "redis",
                "memorystore needs the stack's own VPC (clusterMode gke); allowed with "
                "clusterMode existing: in-cluster, none",
            )
        )
    if cfg.cluster_mode == "existing":
        issues += [
            ConfigIssue(key, "required when clusterMode is existing")
            for key, value in (
                ("kubeContext", cfg.kube_context),
                ("imageRepository", cfg.image_repository),
            )
            if not value
        ]
    issues += _cidr_issues(cfg)
    issues += _edge_issues(cfg)
    if not re.fullmatch(r"^[a-z]+-[a-z]+\d+$", cfg.region):
        issues.append(
            ConfigIssue("region", f"'{cfg.region}' is not a GCP region (e.g. us-central1)")
        )
    if cfg.zone and not re.fullmatch(rf"^{re.escape(cfg.region)}-[a-z]$", cfg.zone):
        issues.append(
            ConfigIssue(
                "zone",
                f"'{cfg.zone}' is not a zone of region {cfg.region} "
                f"(e.g. {cfg.region}-a); empty for a regional cluster",
            )
        )
    return issues


def _cidr_issues(cfg: StackConfig) -> list[ConfigIssue]:
    """Ranges (each a valid network: `fields.Cidr`) must not overlap each other, and the
    control plane's must be a /28."""
    issues = []
    ranges = {
        key: ipaddress.IPv4Network(value)
        for key, value in (
            ("nodeCidr", cfg.node_cidr),
            ("podCidr", cfg.pod_cidr),
            ("serviceCidr", cfg.service_cidr),
            ("masterCidr", cfg.master_cidr),
            ("proxyOnlyCidr", cfg.proxy_only_cidr),
        )
    }
    if ranges["masterCidr"].prefixlen != 28:
        issues.append(ConfigIssue("masterCidr", f"'{cfg.master_cidr}' must be a /28 (GKE's rule)"))
    keys = list(ranges)
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            if ranges[first].overlaps(ranges[second]):
                issues.append(
                    ConfigIssue(second, f"{ranges[second]} overlaps {first} {ranges[first]}")
                )
    return issues


def _edge_issues(cfg: StackConfig) -> list[ConfigIssue]:
    issues = []
    if not re.fullmatch(r"([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", cfg.domain):
        issues.append(
            ConfigIssue("domain", f"'{cfg.domain}' is not a DNS name (e.g. serve.example.com)")
        )
    if cfg.cluster_mode == "existing" and not cfg.tls_secret:
        issues.append(
            ConfigIssue(
                "tlsSecret",
                "required when clusterMode is existing (no Certificate Manager there): "
                "a kubernetes.io/tls Secret for the Gateway",
            )
        )
    if cfg.cloud_armor and cfg.gateway_class != "gke-l7-global-external-managed":
        issues.append(
            ConfigIssue(
                "cloudArmor",
                "Cloud Armor backend policies here are global; allowed with "
                f"{cfg.gateway_class}: false (or gatewayClass gke-l7-global-external-managed)",
            )
        )
    member = re.compile(
        r"(user|group|serviceAccount):[^\s@:]+@[a-z0-9.-]+\.[a-z]+|domain:[a-z0-9.-]+\.[a-z]+"
    )
    for i, value in enumerate(cfg.iap_members):
        if not member.fullmatch(value):
            issues.append(
                ConfigIssue(
                    f"iapMembers[{i}]",
                    f"'{value}' is not an IAM member; allowed: user:<email>, group:<email>, "
                    "serviceAccount:<email>, domain:<domain>",
                )
            )
    # IAM compares emails case-insensitively: `user:A@x.com` and `user:a@x.com` are one.
    issues += _duplicates(
        ((f"iapMembers[{i}]", m.lower()) for i, m in enumerate(cfg.iap_members)), "IAP member"
    )
    return issues


REDIS_MIN_MEMORY = 256 * 2**20  # below this the GCS tables of a small cluster do not fit
# A public range wider than this is "the internet" as far as the control plane goes.
WIDEST_AUTHORIZED_PUBLIC_PREFIX = 16


# GKE refuses a maintenance policy with less than 48 h of windows in any 32 days.
MIN_MAINTENANCE_HOURS_PER_32_DAYS = 48


def _maintenance_issues(cfg: StackConfig) -> list[ConfigIssue]:
    days = cfg.maintenance_days.split(",")
    issues = _duplicates((("maintenanceDays", d) for d in days), "day")
    # Every 32 days hold at least 4 of each weekday.
    hours = len(set(days)) * 4 * cfg.maintenance_hours
    if hours < MIN_MAINTENANCE_HOURS_PER_32_DAYS:
        issues.append(
            ConfigIssue(
                "maintenanceHours",
                f"{cfg.maintenance_hours} h on {cfg.maintenance_days} gives GKE {hours} h in 32 "
                f"days; GKE needs at least {MIN_MAINTENANCE_HOURS_PER_32_DAYS}: allowed: more "
                "maintenanceDays or a longer maintenanceHours",
            )
        )
    for i, pool in enumerate(cfg.node_pools):
        if pool.upgrade_max_surge + pool.upgrade_max_unavailable == 0:
            issues.append(
                ConfigIssue(
                    f"nodePools[{i}].upgradeMaxSurge",
                    "upgradeMaxSurge and upgradeMaxUnavailable are both 0, so GKE could never "
                    "upgrade the pool; allowed: upgradeMaxSurge >= 1 (new nodes first) or "
                    "upgradeMaxUnavailable >= 1",
                )
            )
    return issues


def _control_plane_issues(cfg: StackConfig) -> list[ConfigIssue]:
    ip_only = cfg.cluster_mode == "gke" and cfg.control_plane_access == "ip"
    if ip_only and not cfg.master_authorized_networks:
        return [
            ConfigIssue(
                "masterAuthorizedNetworks",
                "is empty, so with controlPlaneAccess ip nothing outside the VPC reaches "
                "the control plane (pulumi up included): list the CIDRs that run pulumi "
                "up, or use controlPlaneAccess dns",
            )
        ]
    issues = []
    for i, cidr in enumerate(cfg.master_authorized_networks):
        network = ipaddress.IPv4Network(cidr)
        if network.prefixlen < WIDEST_AUTHORIZED_PUBLIC_PREFIX and not network.is_private:
            issues.append(
                ConfigIssue(
                    f"masterAuthorizedNetworks[{i}]",
                    f"'{cidr}' opens the control plane to a large part of the internet; "
                    f"allowed: public ranges of /{WIDEST_AUTHORIZED_PUBLIC_PREFIX} or "
                    "narrower (the addresses that run pulumi up and kubectl), or "
                    "controlPlaneAccess dns (IAM-checked from anywhere)",
                )
            )
    issues += _duplicates(
        ((f"masterAuthorizedNetworks[{i}]", str(ipaddress.IPv4Network(c)))
         for i, c in enumerate(cfg.master_authorized_networks)),
        "network",
    )  # fmt: skip
    return issues


def _approval_issues(cfg: StackConfig) -> list[ConfigIssue]:
    services = [s.name for s in cfg.services]
    return [
        ConfigIssue(
            "approveClusterReplacement",
            f"'{name}' is not a service of this stack; allowed: {', '.join(services)}",
        )
        for name, _, _ in (e.partition(":") for e in cfg.approve_cluster_replacement.split(","))
        if name and name not in services
    ]


def stack_issues(cfg: StackConfig, project_root: Path = PROJECT_ROOT) -> list[ConfigIssue]:
    """Every problem that spans keys; empty when the stack is deployable."""
    return (
        _approval_issues(cfg)
        + _control_plane_issues(cfg)
        + _maintenance_issues(cfg)
        + _cluster_issues(cfg)
        + _node_pool_issues(cfg)
        + _service_issues(cfg, project_root)
        + _stack_wide_app_issues(cfg)
        + sizing_issues(cfg)
    )
