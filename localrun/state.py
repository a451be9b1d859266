"""What a running local cluster is: its ports and processes, saved for `make stop`."""

from __future__ import annotations

import json
from dataclasses import InitVar, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from localrun.processes import LOCALHOST, free_ports


def _pick_unset(ports: Any, exclude: frozenset[int]) -> None:
    """Give every port field left at 0 a free port, distinct and not in `exclude`."""
    unset = [f.name for f in fields(ports) if getattr(ports, f.name) == 0]
    for name, port in zip(unset, free_ports(len(unset), exclude), strict=True):
        setattr(ports, name, port)


@dataclass
class ClusterPorts:
    """The local cluster's ports; the ones left at 0 are picked free and distinct."""

    gcs: int = 0
    dashboard: int = 0
    client: int = 0
    metrics: int = 0
    agent_http: int = 0
    agent_grpc: int = 0
    runtime_env_agent: int = 0
    # `haproxy` ingress: HAProxy's stats page and Prometheus exporter, and the Serve
    # proxy kept on the head as HAProxy's fallback. Ray's fixed defaults (8404, 9101,
    # 8500) would collide between two clusters on one machine.
    haproxy_stats: int = 0
    haproxy_metrics: int = 0
    fallback_proxy: int = 0
    http: int = 8000

    def __post_init__(self) -> None:
        _pick_unset(self, frozenset())


@dataclass
class WorkerPorts:
    """One worker raylet's ports: raylets sharing a machine cannot share any of them."""

    node_manager: int = 0
    object_manager: int = 0
    metrics: int = 0
    agent_http: int = 0
    agent_grpc: int = 0
    runtime_env_agent: int = 0
    # Serve's ingress on this node (HAProxy or the proxy): a GKE worker pod's port 8000.
    http: int = 0
    haproxy_stats: int = 0
    haproxy_metrics: int = 0
    exclude: InitVar[frozenset[int]] = frozenset()

    def __post_init__(self, exclude: frozenset[int]) -> None:
        _pick_unset(self, exclude)


@dataclass
class WorkerNode:
    """A worker raylet (`make run NODES=3` starts two), in a session of its own."""

    ports: WorkerPorts
    sid: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.http}"


@dataclass
class ClusterState:
    """What `make stop` and `make status` need to find a running cluster."""

    ports: ClusterPorts
    runner_pid: int | None = None  # the `make run` process that owns the cluster
    ray_sid: int | None = None
    redis_sid: int | None = None
    redis_port: int | None = None
    api_key_file: str = ""
    temp_dir: str = ""
    """Ray's --temp-dir: this cluster's sessions and logs, apart from any other cluster."""
    workers: list[WorkerNode] = field(default_factory=list)

    def used_ports(self) -> frozenset[int]:
        ports = set(asdict(self.ports).values())
        for worker in self.workers:
            ports |= set(asdict(worker.ports).values())
        return frozenset(ports)

    def sessions(self) -> list[int]:
        """Every process session of the cluster (head, workers, Redis)."""
        sids = [self.ray_sid, *(w.sid for w in self.workers), self.redis_sid]
        return [sid for sid in sids if sid is not None]

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.dashboard}"

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOCALHOST}:{self.ports.metrics}/metrics"

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["ports"] = ClusterPorts(**data["ports"])
        data["workers"] = [
            WorkerNode(WorkerPorts(**w["ports"]), w.get("sid")) for w in data.get("workers", [])
        ]
        return cls(**data)
