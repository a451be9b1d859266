"""What a running local cluster is: its ports and processes, saved for `make stop`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from localrun.processes import LOCALHOST, free_ports


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
        unset = [f.name for f in fields(self) if getattr(self, f.name) == 0]
        for name, port in zip(unset, free_ports(len(unset)), strict=True):
            setattr(self, name, port)


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
        return cls(**data)
