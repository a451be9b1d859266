"""What changes between the cluster's serve config and a laptop's: as little as possible."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from typing import Any

from localrun.processes import LOCALHOST


def local_gpu_count() -> int:
    """GPUs `nvidia-smi` lists here (Ray detects the same ones); 0 without a driver."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return 0
    try:
        out = subprocess.run([binary, "-L"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def localize(
    serve_config: dict[str, Any], *, http_port: int, gpus: int, cores: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The stack's serve config for this machine, and a note for every change made.

    Only four things change: Serve's HTTP listens on loopback at `http_port`; GPU
    requests become CPU replicas when this machine has no GPU (the apps pick their
    device at start-up, so the same code runs either way); memory reservations, sized
    for cluster nodes, are not made on a laptop; and pins to worker groups (custom
    placement resources) are dropped: one machine is every group.
    """
    config = copy.deepcopy(serve_config)
    config["http_options"]["host"] = LOCALHOST
    config["http_options"]["port"] = http_port
    notes = []
    for app in config["applications"]:
        for dep in app.get("deployments", []):
            options = dep.get("ray_actor_options", {})
            if options.pop("memory", None) is not None:
                notes.append(
                    f"{app['name']}/{dep['name']} reserves memory per replica on the "
                    "cluster; not reserved here"
                )
            pinned = options.pop("resources", None)
            if pinned:
                notes.append(
                    f"{app['name']}/{dep['name']} is pinned to {', '.join(sorted(pinned))} on "
                    "the cluster; here every replica runs on this machine"
                )
            wanted = options.get("num_gpus", 0)
            if wanted and gpus == 0:
                options["num_gpus"] = 0
                notes.append(
                    f"{app['name']}/{dep['name']} asks for {wanted:g} GPU(s); this machine "
                    "has none, so it runs on CPU here"
                )
                notes += _one_replica_per_core(app["name"], dep, cores or os.cpu_count() or 1)
    return config, notes


def _one_replica_per_core(app: str, dep: dict[str, Any], cores: int) -> list[str]:
    """A GPU deployment on CPU starts one replica per core (within its max_replicas).

    A GPU replica's work is on the GPU; on CPU, single-threaded replicas side by side
    beat one multi-threaded replica (measured in docs/benchmarks.md: 32-text requests
    reach the in-process limit, one-text ones gain ~15 %).
    """
    scale = dep.get("autoscaling_config")
    if scale is None:
        return []
    replicas = min(scale["max_replicas"], cores)
    if replicas <= scale["min_replicas"]:
        return []
    scale["min_replicas"] = replicas
    scale["initial_replicas"] = max(replicas, scale.get("initial_replicas") or 0)
    return [f"{app}/{dep['name']}: at least {replicas} CPU replicas here, one per core"]


def logical_cpus_needed(serve_config: dict[str, Any]) -> float:
    """CPUs the apps reserve at their largest, so Ray never leaves a replica pending."""
    total = 0.0
    for app in serve_config["applications"]:
        for dep in app.get("deployments", []):
            replicas = dep.get("autoscaling_config", {}).get("max_replicas") or dep.get(
                "num_replicas", 1
            )
            total += replicas * dep.get("ray_actor_options", {}).get("num_cpus", 1)
    return total + 1  # the Serve controller and the proxy
