"""What every drill stands on: the dev stack's classifier on a local head + two workers,
closed-loop load through the workers' ingress (bench's load generator), and the
reading of what the clients saw.

The cluster is `make run NODES=3` (localrun.LocalCluster with two worker nodes): the
head runs no replica (`num-cpus 0`, as on GKE), each worker runs one classifier replica
and its own Serve ingress (HAProxy or Ray's proxy) on a port of its own, as each GKE
worker pod serves port 8000 behind the Service. Clients go through `Balancer`, which
does what GKE does with the worker pods: it sends to every node whose readiness probe
passes (Serve fails it on a node it drains, e.g. one left without replicas).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import run_load
from infra.config import PROJECT_ROOT, Autoscaling, ServeIngress, StackConfig
from infra.config.sources import load_stack_file
from infra.rayservice.manifest import _proxy_probe
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import prepare_artifacts
from localrun.cluster import LocalCluster
from localrun.localize import localize
from localrun.polling import poll_until
from localrun.processes import LocalRunError, free_port
from localrun.serve_client import UNREACHABLE, applications, deploy, wait_until_running
from serve_apps.tabular_classifier.app import example_request


@dataclass(frozen=True)
class Workload:
    """One app of the dev stack and the request the clients send it."""

    app: str
    deployment: str
    route: str
    body: bytes


# The drills' app: cheap enough to leave the 2 cores to the data plane.
CLASSIFY = Workload("classifier", "Classifier", "/classify", json.dumps(example_request()).encode())
# The autoscaling step's: one text per request to the embedder, whose replicas (not the
# data plane, not the clients) are the bottleneck, so both modes see the same load.
EMBED = Workload("embeddings", "Embedder", "/embed", b'{"texts": ["one text to embed"]}')
REPLICAS = 2  # one per worker node
CLIENTS = 8
# The drills' requestTimeoutS: short, so the hung-replica drill ends in seconds; every
# bound derived from it (HAProxy's server timeout, hard-stop-after) scales with it.
REQUEST_TIMEOUT_S = 10
# Logical CPUs per worker raylet: room for every replica of a drill on one node.
WORKER_CPUS = 4


def drill_stack(
    ingress: ServeIngress,
    workload: Workload = CLASSIFY,
    autoscaling: Autoscaling | None = None,
    **deployment: Any,
) -> StackConfig:
    """The dev stack reduced to one app, with `ingress`, REPLICAS fixed replicas (or
    `autoscaling`, and other `deployment` settings) and the drills' request timeout;
    everything else as the dev stack has it."""
    stack = load_stack_file("dev")
    service = stack.services[0]
    app = next(a for a in service.apps if a.name == workload.app)
    updates = {"num_replicas": None if autoscaling else REPLICAS, "autoscaling": autoscaling}
    deployment_ = app.deployments[0].model_copy(update=updates | deployment)
    app = app.model_copy(update={"deployments": [deployment_]})
    service = service.model_copy(update={"apps": [app]})
    return stack.model_copy(
        update={
            "services": [service],
            "serve_ingress": ingress,
            "request_timeout_s": REQUEST_TIMEOUT_S,
        }
    )


def serve_config(stack: StackConfig, http_port: int) -> dict[str, Any]:
    """The generated serve config, localized as `make run` does."""
    config, _ = localize(stack_serve_config(stack), http_port=http_port, gpus=0)
    return config


def deployment_of(config: dict[str, Any]) -> dict[str, Any]:
    deployments: list[dict[str, Any]] = config["applications"][0]["deployments"]
    return deployments[0]


class DrillCluster:
    """A head and two worker nodes serving the drill stack in one ingress mode."""

    def __init__(
        self, ingress: ServeIngress, state_dir: Path, log: Callable[[str], None] = print
    ) -> None:
        self.ingress = ingress
        self.stack = drill_stack(ingress)
        self.log = log
        self.cluster = LocalCluster(
            PROJECT_ROOT,
            state_dir,
            namespace=f"drills-{ingress}",
            num_cpus=WORKER_CPUS,
            ingress=ingress,
            worker_nodes=2,
            request_timeout_s=REQUEST_TIMEOUT_S,
            log=log,
        )
        if self.cluster.ingress != ingress:
            raise LocalRunError(f"cannot drill {ingress}: {self.cluster.ingress_note}")
        self.key = ""
        self.base_config: dict[str, Any] = {}

    def __enter__(self) -> DrillCluster:
        try:
            self.start()
        except BaseException:
            self.cluster.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cluster.stop()

    def start(self) -> None:
        prepare_artifacts(load_stack_file("dev"))  # both apps: the step uses the embedder
        self.cluster.state.ports.http = free_port()
        self.key = self.cluster.create_api_key()
        self.cluster.start_redis()
        self.cluster.start_ray()
        self.base_config = serve_config(self.stack, self.cluster.state.ports.http)
        self.apply(self.base_config)
        self.wait_replicas(REPLICAS)
        self.wait_ingress()

    @property
    def dashboard(self) -> str:
        return self.cluster.state.dashboard_url

    def bases(self, workers: list[int] | None = None) -> list[str]:
        """Each worker node's ingress (or `workers`' only), as the Service's endpoints."""
        chosen = range(len(self.cluster.state.workers)) if workers is None else workers
        return [self.cluster.state.workers[i].http_url for i in chosen]

    def apply(self, config: dict[str, Any], wait: bool = True) -> None:
        deploy(self.dashboard, config)
        if wait:
            time.sleep(1)  # let the controller take the new config before polling
            names = [app["name"] for app in config["applications"]]
            wait_until_running(self.dashboard, names, 300)

    def _deployment(self, workload: Workload) -> dict[str, Any]:
        app = applications(self.dashboard).get(workload.app, {})
        return dict(app.get("deployments", {}).get(workload.deployment, {}))

    def replicas(self, workload: Workload = CLASSIFY) -> list[dict[str, Any]]:
        return list(self._deployment(workload).get("replicas") or [])

    def target_replicas(self, workload: Workload = CLASSIFY) -> int | None:
        target = self._deployment(workload).get("target_num_replicas")
        return int(target) if target is not None else None

    def wait_replicas(
        self,
        count: int,
        timeout_s: float = 180,
        exclude: frozenset[str] = frozenset(),
        workload: Workload = CLASSIFY,
    ) -> float:
        """Seconds until exactly `count` replicas run (none starting or stopping, none
        of `exclude`) and the app is RUNNING."""
        start = time.monotonic()

        def settled() -> bool:
            app = applications(self.dashboard).get(workload.app, {})
            replicas = app.get("deployments", {}).get(workload.deployment, {}).get("replicas")
            replicas = replicas or []
            running = [r for r in replicas if r.get("state") == "RUNNING"]
            return (
                app.get("status") == "RUNNING"
                and len(running) == len(replicas) == count
                and not {r["replica_id"] for r in replicas} & exclude
            )

        poll_until(
            settled,
            timeout_s=timeout_s,
            interval_s=1,
            ignore=UNREACHABLE,
            what=f"{count} RUNNING {workload.deployment} replicas",
        )
        return time.monotonic() - start

    def node_names(self) -> dict[str, str]:
        """Node id -> `head`, `worker-1`, `worker-2` for the nodes alive now."""
        return {node_id: name for name, node_id in self.cluster.alive_nodes().items()}

    def worker_of(self, replica: dict[str, Any]) -> int | None:
        name = self.node_names().get(str(replica.get("node_id")), "")
        return int(name.split("-")[1]) - 1 if name.startswith("worker-") else None

    def reset(self) -> None:
        """The base config and REPLICAS replicas, as before any drill."""
        for index, worker in enumerate(self.cluster.state.workers):
            if worker.sid is None:
                self.cluster.start_worker(index)
        self.apply(self.base_config)
        self.wait_replicas(REPLICAS)
        self.wait_ingress()

    def wait_ingress(self, timeout_s: float = 120) -> None:
        """Until the ingress of every worker node that runs a replica is ready (routes
        in): a drill starts from a cluster the load balancer sends to in full. (Serve
        drains the ingress of a node left without replicas; so does the balancer.)"""
        hosts = {w for w in (self.worker_of(r) for r in self.replicas()) if w is not None}
        poll_until(
            lambda: all(ingress_ready(base) for base in self.bases(sorted(hosts))),
            timeout_s=timeout_s,
            what="the ingress of every worker with a replica ready",
        )

    def haproxy_spawns(self) -> int:
        """HAProxy starts and reloads so far, on every node (Ray logs each)."""
        logs = Path(self.cluster.state.temp_dir) / "session_latest" / "logs" / "serve"
        count = 0
        for path in logs.glob("proxy_*.log"):
            with contextlib.suppress(OSError):
                count += path.read_text(errors="replace").count("Starting HAProxy (spawn #")
        return count


# -- load ------------------------------------------------------------------------------


def ingress_ready(base: str, timeout_s: float = 2) -> bool:
    """Whether a node's Serve ingress passes the worker pods' readiness probe."""
    try:
        return httpx.get(f"{base}/-/healthz", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class Balancer:
    """GKE's part: requests go round-robin to the nodes whose readiness probe passes (the
    probe worker pods get: GET /-/healthz every periodSeconds, out after
    failureThreshold failures in a row, back after one success)."""

    def __init__(self, bases: list[str], route: str) -> None:
        probe = _proxy_probe()
        self.bases, self.route = bases, route
        self.period_s = float(probe["periodSeconds"])
        self.timeout_s = float(probe["timeoutSeconds"])
        self.threshold = int(probe["failureThreshold"])
        self.ready = dict.fromkeys(bases, False)
        self._failures = dict.fromkeys(bases, 0)
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        while not self._stop.wait(self.period_s):
            self.probe_once()

    def probe_once(self) -> None:
        for base in self.bases:
            self._observe(base, ingress_ready(base, self.timeout_s))

    def _observe(self, base: str, ok: bool) -> None:
        # Kubernetes' readiness: in after one success; out only after failureThreshold
        # failures in a row; a node that is out stays out while it keeps failing.
        self._failures[base] = 0 if ok else self._failures[base] + 1
        self.ready[base] = ok or (self.ready[base] and self._failures[base] < self.threshold)

    def pick(self) -> str:
        ready = [base for base in self.bases if self.ready[base]] or self.bases
        return ready[next(self._turn) % len(ready)] + self.route

    def __enter__(self) -> Balancer:
        self.probe_once()  # every node starts out, as a pod starts unready
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


Event = tuple[float, float, str]  # (sent, done, outcome) on time.perf_counter()


class Load:
    """Closed-loop clients (bench.loadgen) in a thread until stopped; `events` fills live.
    `bases` are the nodes' ingress URLs, behind a Balancer."""

    def __init__(
        self,
        bases: list[str],
        key: str,
        clients: int = CLIENTS,
        timeout_s: float = 60,
        workload: Workload = CLASSIFY,
    ) -> None:
        self.balancer = Balancer(bases, workload.route)
        self.body = workload.body
        self.key, self.clients, self.timeout_s = key, clients, timeout_s
        self.events: list[Event] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        run_load(
            self.balancer.pick,
            [self.body],
            headers={"Authorization": f"Bearer {self.key}"},
            concurrency=self.clients,
            warmup_s=0,
            window_s=3600,
            texts_per_request=1,
            request_timeout_s=self.timeout_s,
            stop=self._stop,
            events=self.events,
        )

    def __enter__(self) -> Load:
        self.balancer.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout_s + 30)
        self.balancer.__exit__()

    def wait_clean(self, clean_for_s: float, timeout_s: float) -> None:
        """Until the last `clean_for_s` seconds held answers and no failure."""

        def clean() -> bool:
            now = time.perf_counter()
            recent = [e for e in list(self.events) if e[1] >= now - clean_for_s]
            failed = any(outcome != "200" for _, _, outcome in recent)
            return bool(recent) and not failed and time.perf_counter() - started >= clean_for_s

        started = time.perf_counter()
        poll_until(clean, timeout_s=timeout_s, interval_s=0.5, what="clean answers")


@dataclass
class Outcome:
    """What the clients saw in one drill."""

    total: int
    failed: int
    kinds: dict[str, int]
    clean_after_s: float
    """From the fault until the last failed answer ended (0: none failed)."""
    max_latency_s: float
    p99_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> str:
        return f"{self.failed}/{self.total}"


def outcome(events: list[Event], fault_at: float) -> Outcome:
    failures = [e for e in events if e[2] != "200"]
    latencies = sorted(done - sent for sent, done, _ in events)
    p99 = latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)] if latencies else 0.0
    return Outcome(
        total=len(events),
        failed=len(failures),
        kinds=dict(Counter(kind for _, _, kind in failures)),
        clean_after_s=max((done - fault_at for _, done, _ in failures), default=0.0),
        max_latency_s=latencies[-1] if latencies else 0.0,
        p99_ms=p99 * 1000,
    )


@contextlib.contextmanager
def stopped_process(pid: int) -> Iterator[None]:
    """SIGSTOP a process (it hangs: holds its sockets, answers nothing); on the way out
    SIGKILL it if Serve has not replaced and killed it already."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
