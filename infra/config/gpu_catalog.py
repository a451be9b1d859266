"""Which GKE machine types can carry which NVIDIA GPUs, and how many.

GPU machine families come in two shapes on Compute Engine:
- accelerator-optimized (g2, a2, a3): the GPUs are part of the machine type, so the
  machine type fixes the GPU model and count (g2-standard-24 always has 2 L4s);
- N1 plus an attached accelerator (T4): any N1 shape takes 1, 2 or 4 T4s, with a cap
  on vCPUs per GPU count.
The tables below are Compute Engine's published shapes; a pairing outside them is
rejected at config time, not by the GKE API twenty minutes into `pulumi up`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The value a node pool's `gpuType` takes is GKE's accelerator name, the same string
# that appears in the node label `cloud.google.com/gke-accelerator`.
L4 = "nvidia-l4"
T4 = "nvidia-tesla-t4"
A100_40GB = "nvidia-tesla-a100"
A100_80GB = "nvidia-a100-80gb"
H100_80GB = "nvidia-h100-80gb"
H100_MEGA_80GB = "nvidia-h100-mega-80gb"


@dataclass(frozen=True)
class GpuType:
    """One GPU model: the machine shapes that carry it and the counts they carry."""

    accelerator: str
    family: str
    # machine type -> GPUs per node, for accelerator-optimized families.
    bundled: dict[str, int]
    # N1-style attachable GPUs: allowed count -> max vCPUs of the machine.
    attachable: dict[int, int]


GPU_TYPES: dict[str, GpuType] = {
    L4: GpuType(
        L4,
        "g2",
        bundled={
            "g2-standard-4": 1,
            "g2-standard-8": 1,
            "g2-standard-12": 1,
            "g2-standard-16": 1,
            "g2-standard-32": 1,
            "g2-standard-24": 2,
            "g2-standard-48": 4,
            "g2-standard-96": 8,
        },
        attachable={},
    ),
    T4: GpuType(T4, "n1", bundled={}, attachable={1: 48, 2: 48, 4: 96}),
    A100_40GB: GpuType(
        A100_40GB,
        "a2",
        bundled={
            "a2-highgpu-1g": 1,
            "a2-highgpu-2g": 2,
            "a2-highgpu-4g": 4,
            "a2-highgpu-8g": 8,
            "a2-megagpu-16g": 16,
        },
        attachable={},
    ),
    A100_80GB: GpuType(
        A100_80GB,
        "a2",
        bundled={
            "a2-ultragpu-1g": 1,
            "a2-ultragpu-2g": 2,
            "a2-ultragpu-4g": 4,
            "a2-ultragpu-8g": 8,
        },
        attachable={},
    ),
    H100_80GB: GpuType(
        H100_80GB,
        "a3",
        bundled={
            "a3-highgpu-1g": 1,
            "a3-highgpu-2g": 2,
            "a3-highgpu-4g": 4,
            "a3-highgpu-8g": 8,
        },
        attachable={},
    ),
    H100_MEGA_80GB: GpuType(H100_MEGA_80GB, "a3", bundled={"a3-megagpu-8g": 8}, attachable={}),
}

# Families whose every machine type carries GPUs: a pool of them must name its GPU.
GPU_ONLY_FAMILIES = frozenset({"g2", "a2", "a3"})

_MACHINE_TYPE = re.compile(
    r"^(?P<family>[a-z][a-z0-9]*)-(?P<kind>[a-z]+)(?:-(?P<size>\d+)(?:g)?)?$"
)
_N1_SHAPES = {"standard", "highmem", "highcpu"}


class PairingError(ValueError):
    """A machine type / GPU combination that Compute Engine does not offer."""


def machine_family(machine_type: str) -> str | None:
    """`g2-standard-8` -> `g2`; None when the name is not a machine type at all."""
    match = _MACHINE_TYPE.fullmatch(machine_type)
    return match.group("family") if match else None


def vcpus(machine_type: str) -> int | None:
    """vCPUs of a predefined N-series shape (`n1-standard-8` -> 8), else None."""
    match = _MACHINE_TYPE.fullmatch(machine_type)
    if not match or match.group("size") is None or match.group("kind") not in _N1_SHAPES:
        return None
    return int(match.group("size"))


def gpus_per_node(machine_type: str, gpu_type: str, gpu_count: int | None) -> int:
    """The GPU count a node of this pool carries, or PairingError saying why not.

    For accelerator-optimized machines the count is implied by the machine type and an
    explicit `gpu_count` must agree with it; for N1 + T4 it must be one of the
    attachable counts and the machine must not exceed that count's vCPU cap.
    """
    gpu = GPU_TYPES[gpu_type]
    family = machine_family(machine_type)
    if gpu.bundled:
        if machine_type not in gpu.bundled:
            allowed = ", ".join(sorted(gpu.bundled, key=lambda m: (gpu.bundled[m], m)))
            raise PairingError(
                f"machine type '{machine_type}' cannot carry {gpu_type}; "
                f"allowed machine types: {allowed}"
            )
        implied = gpu.bundled[machine_type]
        if gpu_count is not None and gpu_count != implied:
            by_count = {count: m for m, count in sorted(gpu.bundled.items())}
            allowed = ", ".join(f"{c} ({by_count[c]})" for c in sorted(by_count))
            raise PairingError(
                f"{machine_type} carries exactly {implied} x {gpu_type}, not {gpu_count}; "
                f"allowed counts for {gpu_type}: {allowed}"
            )
        return implied
    if family != gpu.family:
        raise PairingError(
            f"{gpu_type} attaches only to {gpu.family} machine types "
            f"(e.g. {gpu.family}-standard-8), not '{machine_type}'"
        )
    count = 1 if gpu_count is None else gpu_count
    if count not in gpu.attachable:
        allowed = ", ".join(str(c) for c in sorted(gpu.attachable))
        raise PairingError(f"{gpu_type} count {count} is not offered; allowed counts: {allowed}")
    cpus = vcpus(machine_type)
    if cpus is None:
        raise PairingError(
            f"'{machine_type}' is not a predefined {gpu.family} shape "
            f"({gpu.family}-standard-N, {gpu.family}-highmem-N or {gpu.family}-highcpu-N)"
        )
    if cpus > gpu.attachable[count]:
        raise PairingError(
            f"{count} x {gpu_type} allows at most {gpu.attachable[count]} vCPUs; "
            f"{machine_type} has {cpus}"
        )
    return count
