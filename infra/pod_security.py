"""Pod and container security settings every workload the program writes carries.

Kubernetes' "restricted" Pod Security Standard, plus a read-only root filesystem:
non-root, no privilege escalation, every capability dropped, the runtime's default
seccomp profile. Writable paths are emptyDirs mounted where the process writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECCOMP_RUNTIME_DEFAULT = {"type": "RuntimeDefault"}


def container_security_context(*, read_only_root: bool = True) -> dict[str, Any]:
    """A container's securityContext: the restricted profile, root filesystem read-only."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": dict(SECCOMP_RUNTIME_DEFAULT),
    }


def pod_security_context(uid: int, gid: int, *, fs_group: int | None = None) -> dict[str, Any]:
    """A pod's securityContext: a fixed non-root user, group-owned volumes."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": dict(SECCOMP_RUNTIME_DEFAULT),
    }
    if fs_group is not None:
        context["fsGroup"] = fs_group
        # Only re-own a volume when its root is not ours already (fast pod starts).
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    return context


def writable_dirs(paths: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One emptyDir volume per `name -> path` a process writes under a read-only root,
    and the container's mounts of them (parents first, so nested paths mount last)."""
    ordered = sorted(paths.items(), key=lambda item: item[1].count("/"))
    volumes = [{"name": name, "emptyDir": {}} for name, _ in ordered]
    mounts = [{"name": name, "mountPath": path} for name, path in ordered]
    return volumes, mounts
