"""Compute Engine machine shapes GKE node pools use, and what a node leaves for pods.

Shapes are Compute Engine's published predefined machine types (vCPUs, memory in GiB;
Compute Engine's "GB" is binary). Allocatable follows GKE's published reservation
formula for Standard clusters (cloud.google.com/kubernetes-engine/docs/concepts/
plan-node-sizes), minus an allowance for the DaemonSets GKE itself runs on every node.
A pod that does not fit a node of its pool never schedules: the check runs at
`pulumi preview`, not when a Ray worker sits Pending for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
MIB = 2**20


@dataclass(frozen=True)
class Shape:
    vcpus: float
    memory_gib: float


def _series(family: str, kind: str, gib_per_vcpu: float, sizes: tuple[int, ...]) -> dict:
    return {f"{family}-{kind}-{n}": Shape(n, n * gib_per_vcpu) for n in sizes}


_STANDARD_SIZES = (2, 4, 8, 16, 32, 48, 64, 80, 96, 128)
MACHINE_SHAPES: dict[str, Shape] = {
    **_series("e2", "standard", 4, (2, 4, 8, 16, 32)),
    **_series("e2", "highmem", 8, (2, 4, 8, 16)),
    **_series("e2", "highcpu", 1, (2, 4, 8, 16, 32)),
    **_series("n1", "standard", 3.75, (1, 2, 4, 8, 16, 32, 64, 96)),
    **_series("n1", "highmem", 6.5, (2, 4, 8, 16, 32, 64, 96)),
    **_series("n1", "highcpu", 0.9, (2, 4, 8, 16, 32, 64, 96)),
    **_series("n2", "standard", 4, _STANDARD_SIZES),
    **_series("n2", "highmem", 8, _STANDARD_SIZES),
    **_series("n2", "highcpu", 1, _STANDARD_SIZES[:-1]),
    **_series("n2d", "standard", 4, (*_STANDARD_SIZES, 224)),
    **_series("n2d", "highmem", 8, _STANDARD_SIZES[:-1]),
    **_series("n2d", "highcpu", 1, (*_STANDARD_SIZES, 224)),
    **_series("n4", "standard", 4, (2, 4, 8, 16, 32, 48, 64, 80)),
    **_series("n4", "highmem", 8, (2, 4, 8, 16, 32, 48, 64, 80)),
    **_series("n4", "highcpu", 2, (2, 4, 8, 16, 32, 48, 64, 80)),
    **_series("c2", "standard", 4, (4, 8, 16, 30, 60)),
    **_series("c3", "standard", 4, (4, 8, 22, 44, 88, 176)),
    **_series("c3", "highmem", 8, (4, 8, 22, 44, 88, 176)),
    **_series("c3", "highcpu", 2, (4, 8, 22, 44, 88, 176)),
    **_series("c3d", "standard", 4, (4, 8, 16, 30, 60, 90, 180, 360)),
    **_series("t2d", "standard", 4, (1, 2, 4, 8, 16, 32, 48, 60)),
    **_series("g2", "standard", 4, (4, 8, 12, 16, 24, 32, 48, 96)),
    "a2-highgpu-1g": Shape(12, 85),
    "a2-highgpu-2g": Shape(24, 170),
    "a2-highgpu-4g": Shape(48, 340),
    "a2-highgpu-8g": Shape(96, 680),
    "a2-megagpu-16g": Shape(96, 1360),
    "a2-ultragpu-1g": Shape(12, 170),
    "a2-ultragpu-2g": Shape(24, 340),
    "a2-ultragpu-4g": Shape(48, 680),
    "a2-ultragpu-8g": Shape(96, 1360),
    "a3-highgpu-1g": Shape(26, 234),
    "a3-highgpu-2g": Shape(52, 468),
    "a3-highgpu-4g": Shape(104, 936),
    "a3-highgpu-8g": Shape(208, 1872),
    "a3-megagpu-8g": Shape(208, 1872),
}
FAMILIES = tuple(sorted({name.split("-")[0] for name in MACHINE_SHAPES}))

# What GKE's own DaemonSets (kube-proxy, fluentbit-gke, gke-metadata-server, netd,
# pdcsi-node, the NVIDIA device plugin on GPU nodes) request per node: an allowance
# read off GKE Standard nodes' pod lists, not a published figure.
DAEMONSET_CPU = 0.4
DAEMONSET_MEMORY = 0.4 * GIB
EVICTION_THRESHOLD = 100 * MIB


def shape(machine_type: str) -> Shape | None:
    return MACHINE_SHAPES.get(machine_type)


def near_machine_types(machine_type: str) -> list[str]:
    """Known shapes of the same family and kind (`e2-standard-7` -> e2-standard-*)."""
    prefix = machine_type.rsplit("-", 1)[0] + "-"
    same_kind = [m for m in MACHINE_SHAPES if m.startswith(prefix)]
    if same_kind:
        return same_kind
    family = machine_type.split("-", 1)[0] + "-"
    return [m for m in MACHINE_SHAPES if m.startswith(family)]


def _tiered(amount: float, tiers: tuple[tuple[float, float], ...], rest: float) -> float:
    """Sum of rate x slice over successive tiers (size, rate), `rest` above the last."""
    reserved, left = 0.0, amount
    for size, rate in tiers:
        step = min(left, size)
        reserved += step * rate
        left -= step
    return reserved + max(left, 0.0) * rest


def allocatable_cpu(machine: Shape) -> float:
    """vCPUs pods may request: GKE reserves 6% of the first core, 1% of the next, 0.5% of
    the next 2, 0.25% above 4; less the DaemonSets' allowance."""
    reserved = _tiered(machine.vcpus, ((1, 0.06), (1, 0.01), (2, 0.005)), 0.0025)
    return machine.vcpus - reserved - DAEMONSET_CPU


def allocatable_memory(machine: Shape) -> float:
    """Bytes pods may request: GKE reserves 25% of the first 4 GiB, 20% of the next 4,
    10% of the next 8, 6% of the next 112, 2% above 128 GiB, plus the 100 MiB eviction
    threshold; less the DaemonSets' allowance."""
    total = machine.memory_gib * GIB
    reserved: float
    if total < GIB:
        reserved = 255 * MIB
    else:
        reserved = _tiered(
            total, ((4 * GIB, 0.25), (4 * GIB, 0.20), (8 * GIB, 0.10), (112 * GIB, 0.06)), 0.02
        )
    return total - reserved - EVICTION_THRESHOLD - DAEMONSET_MEMORY
