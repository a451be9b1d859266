"""Layer 9: tell, in `pulumi preview`, which services get a new Ray cluster, and refuse
before any RayService is touched where the stack forbids it.

A change to a RayService's `serveConfigV2` is applied in place by Serve. A change to its
`rayClusterConfig` is classified the way the pinned KubeRay (1.7) classifies it
(`classify`): some changes it applies to the running cluster, the rest make it start a
whole new cluster and switch traffic once that is ready, so until then both run and
the node pools must hold both.

What the guard compares is known before anything is built: each service's
`rayClusterConfig` with the image given as the digest of the image's *sources*
(`infra.images.source_digests`) and Memorystore's address as a stand-in. So a code
change shows in the preview a reviewer reads on the pull request, not only once the new
image's digest exists. Each RayService takes its service's verdict as an input: a
refused replacement fails that input, so the custom resource is never sent.

Policy with `failOnClusterReplacement` (prod): a new cluster is allowed when both
clusters fit every pool's `maxNodes`; otherwise it is refused unless approved for
exactly this change with `approveClusterReplacement: <service>:<fingerprint>` (for
one run: `pulumi up -c ...`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import pulumi

from infra.config import PROJECT, Service, StackConfig, WorkerGroup, gpu_catalog, quantity_value
from infra.rayservice.manifest import RedisConnection, rayservice_inputs, rayservice_manifest

IN_PLACE = "serveConfigV2 (apps, routes, replicas, autoscaling, user_config, args)"
# Stand-ins for what only a provider knows, so the comparison is the same in preview.
MEMORYSTORE_STAND_IN = "rediss://(memorystore address)"
OUTPUT_NAME = "knownClusterConfigs"
FINGERPRINT_ANNOTATION = "rayserve-gke/cluster-fingerprint"
# Per worker group, what KubeRay 1.7 leaves out of the hash that decides on a new
# cluster (GenerateHashWithoutReplicasAndWorkersToDelete): changing only these neither
# replaces nor updates the running cluster.
SCALING_FIELDS = ("replicas", "minReplicas", "maxReplicas", "scaleStrategy")


def image_of_sources(source_digest: str) -> str:
    return f"(image built from sources sha256:{source_digest})"


def known_cluster_config(
    stack: StackConfig, service: Service, source_digest: str, redis: RedisConnection | None
) -> dict[str, Any]:
    """The service's rayClusterConfig as far as it is known before any provider runs."""
    if redis is not None and not isinstance(redis.address, str):
        redis = replace(redis, address=MEMORYSTORE_STAND_IN)
    inputs = rayservice_inputs(stack, service, image_of_sources(source_digest), redis)
    config: dict[str, Any] = rayservice_manifest(stack, service, inputs)["spec"]["rayClusterConfig"]
    return config


def fingerprint(cluster_config: Any) -> str:
    """12 hex digits naming one rayClusterConfig (what an approval refers to)."""
    text = json.dumps(cluster_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


def _without_scaling(config: dict[str, Any]) -> dict[str, Any]:
    groups = [
        {k: v for k, v in group.items() if k not in SCALING_FIELDS}
        for group in config.get("workerGroupSpecs", [])
    ]
    return {**config, "workerGroupSpecs": groups}


ChangeKind = Literal["deferred", "in_place", "new_cluster"]


@dataclass(frozen=True)
class ClusterChange:
    kind: ChangeKind
    paths: list[str]


def classify(old: dict[str, Any], new: dict[str, Any]) -> ClusterChange | None:
    """How KubeRay 1.7's RayService controller applies a rayClusterConfig change (None:
    no change), as `shouldPrepareNewCluster` and `shouldUpdateCluster` decide:
    - only worker groups' replicas/minReplicas/maxReplicas/workersToDelete: the hash
      KubeRay compares ignores them, so nothing happens now (`deferred`: they reach the
      cluster with its next update);
    - worker groups appended after unchanged ones: the running cluster is updated
      (`in_place`);
    - anything else: a new cluster (`new_cluster`), per upgradeStrategy.
    """
    paths = changed_paths(old, new)
    if not paths:
        return None
    old_core, new_core = _without_scaling(old), _without_scaling(new)
    old_groups = old_core.get("workerGroupSpecs", [])
    new_groups = new_core.get("workerGroupSpecs", [])
    appended_only = (
        len(new_groups) > len(old_groups)
        and new_groups[: len(old_groups)] == old_groups
        and {**old_core, "workerGroupSpecs": []} == {**new_core, "workerGroupSpecs": []}
    )
    if old_core == new_core:
        return ClusterChange("deferred", paths)
    if appended_only:
        return ClusterChange("in_place", paths)
    return ClusterChange("new_cluster", changed_paths(old_core, new_core))


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
    """Per pool: nodes the new cluster may add while the old one still holds its own,
    and the pool's cap."""
    peaks = []
    for group in service.worker_groups:
        pool = stack.pool(group.node_pool)
        assert pool is not None
        nodes = math.ceil(group.max_replicas / pods_per_node(stack, group))
        peaks.append(PoolPeak(pool.name, nodes, nodes, pool.max_nodes))
    return peaks


@dataclass(frozen=True)
class Verdict:
    service: str
    change: ClusterChange | None
    allowed: bool
    message: str | None
    """What `pulumi preview` prints (a warning, or the refusal); None: nothing to say."""


def approvals(stack: StackConfig) -> dict[str, str]:
    """`approveClusterReplacement`: service -> the fingerprint of the approved config."""
    entries = [e.strip() for e in stack.approve_cluster_replacement.split(",") if e.strip()]
    return dict(entry.split(":", 1) for entry in entries)


def _image_digest(config: Any) -> str | None:
    """The sources digest the known config names as its image (head container)."""
    try:
        image = config["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    except (KeyError, IndexError, TypeError):
        return None
    return str(image).rsplit("sha256:", 1)[-1].rstrip(")")[:12] if "sha256:" in image else None


def _shown(paths: list[str], old: Any = None, new: Any = None) -> str:
    """The changed paths for a reviewer: every container's image as one item."""
    images = [p for p in paths if p.endswith(".image")]
    rest = [p for p in paths if not p.endswith(".image")]
    items = []
    if images:
        before, after = _image_digest(old), _image_digest(new)
        sources = f" (its sources: sha256 {before} -> {after})" if before and after else ""
        items.append(f"the image{sources}")
    items += rest
    return ", ".join(items[:6]) + (f" and {len(items) - 6} more" if len(items) > 6 else "")


def verdict(
    stack: StackConfig, service: Service, previous: Any, current: dict[str, Any]
) -> Verdict:
    """What this update does to one service's Ray cluster, and whether it may."""
    if not isinstance(previous, dict):
        return Verdict(service.name, None, True, None)  # a new service: created, not replaced
    change = classify(previous, current)
    if change is None:
        return Verdict(service.name, None, True, None)
    name, strategy = service.name, service.upgrade_strategy.type
    if change.kind == "deferred":
        return Verdict(name, change, True, (
            f"RayService '{name}': only worker group scaling bounds changed "
            f"({_shown(change.paths)}); KubeRay 1.7 neither updates nor replaces the running "
            "cluster for these, so they take effect with its next update or new cluster."
        ))  # fmt: skip
    if change.kind == "in_place":
        return Verdict(name, change, True, (
            f"RayService '{name}': KubeRay updates the running cluster in place (worker "
            f"groups added after the existing ones): {_shown(change.paths)}"
        ))  # fmt: skip
    if strategy == "None":
        return Verdict(name, change, True, (
            f"RayService '{name}': rayClusterConfig changed ({_shown(change.paths)}) but "
            "upgradeStrategy is None, so KubeRay will NOT roll it out; only changes to "
            f"{IN_PLACE} apply."
        ))  # fmt: skip
    peaks = peak_nodes(stack, service)
    fits = all(peak.fits for peak in peaks)
    new_fingerprint = fingerprint(current)
    approved = approvals(stack).get(name) == new_fingerprint
    allowed = not stack.fail_on_cluster_replacement or fits or approved
    lines = [
        f"RayService '{name}' will start a NEW Ray cluster (upgradeStrategy {strategy}) "
        f"because rayClusterConfig changed: {_shown(change.paths, previous, current)}. "
        f"Changes to {IN_PLACE} "
        "apply in place; these do not."
    ]
    for peak in peaks:
        total = peak.new_cluster_nodes + peak.old_cluster_nodes
        state = "fits" if peak.fits else "EXCEEDS the pool: raise maxNodes or lower maxReplicas"
        lines.append(
            f"  pool '{peak.pool}': up to {peak.new_cluster_nodes} more node(s) for the new "
            f"cluster while the old one holds up to {peak.old_cluster_nodes}: {total} of "
            f"maxNodes {peak.max_nodes} ({state})"
        )
    if stack.fail_on_cluster_replacement and not fits:
        if approved:
            lines.append(f"  approved for this change ({name}:{new_fingerprint})")
        else:
            lines.append(
                "  REFUSED (failOnClusterReplacement): both clusters do not fit. To ship this "
                "change anyway, approve exactly it for one run: pulumi up -c "
                f"{PROJECT}:approveClusterReplacement={name}:{new_fingerprint}"
            )
    return Verdict(name, change, allowed, "\n".join(lines))


class ClusterReplacementError(RuntimeError):
    """`failOnClusterReplacement` is set and this update would replace a Ray cluster
    that does not fit beside the old one, without an approval."""


def decide(stack: StackConfig, service: Service, previous: Any, current: dict[str, Any]) -> str:
    """Log the verdict; return the config's fingerprint if allowed, else raise (the
    RayService's input then fails and the custom resource is never sent)."""
    result = verdict(stack, service, previous, current)
    if result.message and result.allowed:
        pulumi.log.warn(result.message)
    if not result.allowed:
        raise ClusterReplacementError(result.message)
    return fingerprint(current)


def _decider(stack: StackConfig, service: Service, current: dict[str, Any]) -> Callable[[Any], str]:
    def decide_with(previous_configs: Any) -> str:
        previous = (previous_configs or {}).get(service.name)
        return decide(stack, service, previous, current)

    return decide_with


@dataclass
class UpgradeGuardArgs:
    stack: StackConfig
    """The validated stack config."""
    known_configs: dict[str, dict[str, Any]]
    """Service name -> its rayClusterConfig as known in preview (`known_cluster_config`)."""


class UpgradeGuard(pulumi.ComponentResource):
    """Reads the stack's own previous outputs and gives each service a verdict."""

    verdicts: dict[str, pulumi.Output[str]]
    """Service name -> the fingerprint of its allowed rayClusterConfig (fails if refused)."""

    def __init__(
        self, name: str, args: UpgradeGuardArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:release:UpgradeGuard", name, None, opts)
        own = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
        reference = pulumi.StackReference(
            f"{name}-previous", stack_name=own, opts=pulumi.ResourceOptions(parent=self)
        )
        previous = reference.get_output(OUTPUT_NAME)
        self.verdicts = {
            service.name: previous.apply(
                _decider(args.stack, service, args.known_configs[service.name])
            )
            for service in args.stack.services
        }
        self.known_configs = args.known_configs
        self.register_outputs({OUTPUT_NAME: args.known_configs})
