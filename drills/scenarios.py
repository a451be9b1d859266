"""The drills: each injects one fault or change while closed-loop clients run, and says
what the clients saw (failed/total, seconds until clean again) and what Serve did."""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drills.harness import (
    CLIENTS,
    EMBED,
    REPLICAS,
    REQUEST_TIMEOUT_S,
    DrillCluster,
    Load,
    Outcome,
    deployment_of,
    drill_stack,
    outcome,
    serve_config,
    stopped_process,
)
from infra.config import Autoscaling
from infra.rayservice.serve_config import HAPROXY_SERVER_TIMEOUT_MARGIN_S
from localrun.cluster import worker_name


@dataclass
class DrillResult:
    drill: str
    mode: str
    outcome: Outcome
    note: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timing:
    """How long a drill watches: load before the fault, then until `clean_for_s` of
    clean answers (at most `timeout_s`)."""

    lead_in_s: float = 5
    clean_for_s: float = 10
    timeout_s: float = 240


FULL = Timing()
SHORT = Timing(lead_in_s=3, clean_for_s=5, timeout_s=180)


def run(
    dc: DrillCluster,
    name: str,
    fault: Callable[[], dict[str, Any]],
    timing: Timing,
    *,
    workers: list[int] | None = None,
    client_timeout_s: float = 60,
) -> DrillResult:
    """Load through the workers' ingress; the fault (which also waits for Serve to
    settle, and returns facts about it); then load until clean again."""
    dc.log(f"    {dc.ingress}: {name} ...")
    with Load(dc.bases(workers), dc.key, CLIENTS, client_timeout_s) as load:
        time.sleep(timing.lead_in_s)
        fault_at = time.perf_counter()
        try:
            facts = fault()
        except Exception as exc:  # Serve not recovering is a finding: record it, go on
            facts = {"error": f"{type(exc).__name__}: {exc}"}
        facts["settled_s"] = round(time.perf_counter() - fault_at, 1)
        try:
            load.wait_clean(timing.clean_for_s, timing.timeout_s)
        except Exception as exc:
            facts.setdefault("error", f"{type(exc).__name__}: {exc}")
    result = DrillResult(name, dc.ingress, outcome(load.events, fault_at), facts=facts)
    dc.log(
        f"    {dc.ingress}: {name}: {result.outcome.ratio} failed"
        f" {result.outcome.kinds or ''}, clean after {result.outcome.clean_after_s:.1f}s {facts}"
    )
    return result


def _with_replicas(dc: DrillCluster, count: int) -> dict[str, Any]:
    config = copy.deepcopy(dc.base_config)
    deployment_of(config)["num_replicas"] = count
    return config


# -- the drills --------------------------------------------------------------------------


def scale_down_up(dc: DrillCluster, timing: Timing) -> DrillResult:
    """numReplicas 2 -> 1 -> 2 in place (a replica drains and stops, one starts)."""

    def fault() -> dict[str, Any]:
        dc.apply(_with_replicas(dc, 1), wait=False)
        down = dc.wait_replicas(1)
        time.sleep(timing.clean_for_s / 2)
        dc.apply(_with_replicas(dc, REPLICAS), wait=False)
        return {"down_s": round(down, 1), "up_s": round(dc.wait_replicas(REPLICAS), 1)}

    return run(dc, "scale-down-up", fault, timing)


def reload_churn(dc: DrillCluster, timing: Timing, cycles: int = 3) -> DrillResult:
    """The replica set churns (2 -> 3 -> 2, `cycles` times, each step as soon as the
    last one is done): every change makes every node's HAProxy reload (a new process
    takes over the sockets; the old one finishes its requests and stops)."""

    def fault() -> dict[str, Any]:
        before = dc.haproxy_spawns()
        for _ in range(cycles):
            for count in (REPLICAS + 1, REPLICAS):
                dc.apply(_with_replicas(dc, count), wait=False)
                dc.wait_replicas(count)
        facts: dict[str, Any] = {"replica_set_changes": 2 * cycles}
        if dc.ingress == "haproxy":
            facts["haproxy_reloads"] = dc.haproxy_spawns() - before
        return facts

    return run(dc, "reload-churn", fault, timing)


def new_version(dc: DrillCluster, timing: Timing) -> DrillResult:
    """A new app version (builder args): every replica is replaced, new ones first."""
    config = copy.deepcopy(dc.base_config)
    args = config["applications"][0]["args"]
    args["max_instances_per_request"] = int(args.get("max_instances_per_request", 512)) - 1

    def fault() -> dict[str, Any]:
        old = frozenset(r["replica_id"] for r in dc.replicas())
        dc.apply(config, wait=False)
        return {"replaced_s": round(dc.wait_replicas(REPLICAS, exclude=old), 1)}

    try:
        return run(dc, "new-version", fault, timing)
    finally:
        dc.base_config = config  # the running version from now on


def kill_replica(dc: DrillCluster, timing: Timing) -> DrillResult:
    """SIGKILL one replica's process (a crash: no drain, connections reset)."""

    def fault() -> dict[str, Any]:
        victim = dc.replicas()[0]
        os.kill(int(victim["pid"]), signal.SIGKILL)
        replaced = dc.wait_replicas(REPLICAS, exclude=frozenset({victim["replica_id"]}))
        return {"replaced_s": round(replaced, 1)}

    return run(dc, "replica-sigkill", fault, timing)


def hung_replica(dc: DrillCluster, timing: Timing, hold_s: float | None = None) -> DrillResult:
    """SIGSTOP one replica: it keeps its port and answers nothing. Every request must
    end within the bound (HAProxy's server timeout, requestTimeoutS + margin; the
    proxy's own request timeout), never hang; Serve's health check replaces it (or,
    with `hold_s`, the process is killed after that long, for a shorter drill)."""
    bound_s = REQUEST_TIMEOUT_S + HAPROXY_SERVER_TIMEOUT_MARGIN_S

    def fault() -> dict[str, Any]:
        victim = dc.replicas()[0]
        gone = frozenset({victim["replica_id"]})
        with stopped_process(int(victim["pid"])):
            if hold_s is None:
                replaced = dc.wait_replicas(REPLICAS, timeout_s=300, exclude=gone)
            else:
                time.sleep(hold_s)
        if hold_s is not None:
            replaced = dc.wait_replicas(REPLICAS, exclude=gone)
        return {"replaced_s": round(replaced, 1), "bound_s": bound_s}

    # Clients wait longer than any bound, so a request that hangs shows as one.
    result = run(dc, "hung-replica", fault, timing, client_timeout_s=4 * bound_s)
    result.facts["max_latency_s"] = round(result.outcome.max_latency_s, 1)
    return result


def head_restart(dc: DrillCluster, timing: Timing) -> DrillResult:
    """SIGKILL every head process (GCS, dashboard, Serve controller, the head's ingress)
    and start the head again on the same Redis, as the kubelet would; the workers keep
    serving meanwhile, and the clients only use the workers' ingress."""

    def fault() -> dict[str, Any]:
        dc.cluster.kill_head(grace_s=0)
        down_at = time.perf_counter()
        dc.cluster.start_head()
        head_s = time.perf_counter() - down_at
        dc.cluster.wait_for_nodes()
        dc.wait_replicas(REPLICAS, timeout_s=300)
        return {"head_back_s": round(head_s, 1)}

    return run(dc, "head-restart", fault, timing)


def node_loss(dc: DrillCluster, timing: Timing) -> DrillResult:
    """SIGKILL every process of a worker node that runs a replica (the node is lost:
    its raylet, replicas and ingress). Clients use the other worker's ingress (the load
    balancer stops sending to a lost node), whose HAProxy or proxy forwarded part of
    its requests to the lost node's replica."""
    placed = {r["replica_id"]: dc.worker_of(r) for r in dc.replicas()}
    victim = max((w for w in placed.values() if w is not None), default=1)
    survivor = 1 - victim
    lost = frozenset(rid for rid, worker in placed.items() if worker == victim)

    def fault() -> dict[str, Any]:
        dc.cluster.kill_worker(victim)
        replaced = dc.wait_replicas(REPLICAS, timeout_s=300, exclude=lost)
        return {"lost": worker_name(victim), "replicas_back_s": round(replaced, 1)}

    try:
        return run(dc, "node-loss", fault, timing, workers=[survivor])
    finally:
        dc.cluster.start_worker(victim)  # as KubeRay replaces the pod


DRILLS: dict[str, Callable[[DrillCluster, Timing], DrillResult]] = {
    "scale-down-up": scale_down_up,
    "reload-churn": reload_churn,
    "new-version": new_version,
    "replica-sigkill": kill_replica,
    "hung-replica": hung_replica,
    "head-restart": head_restart,
    "node-loss": node_loss,
}


# -- autoscaling -------------------------------------------------------------------------

# The load step's deployment: the embedder (one text per request) autoscaling from 1 to
# 4 replicas at 8 ongoing requests each, taking 16 at once (batches of 16): 32 clients
# on one replica are more than it runs, and the rest queue inside it.
STEP_MAX_ONGOING = 16
STEP_USER_CONFIG = {"max_batch_size": 16, "batch_wait_timeout_s": 0.001}
STEP_AUTOSCALING = Autoscaling(
    min_replicas=1,
    max_replicas=4,
    target_ongoing_requests=8,
    upscale_delay_s=5,
    downscale_delay_s=15,
)
STEP_CLIENTS = 32


@dataclass
class StepResult:
    mode: str
    variant: str
    max_ongoing_requests: int
    aggregation: str  # how Serve reduces the request count over its look-back window
    first_decision_s: float | None
    first_replica_s: float | None
    all_replicas_s: float | None
    targets: list[int]
    outcome: Outcome
    downscaled_s: float | None


def autoscale_step(
    dc: DrillCluster, *, untuned: bool = False, watch_s: float = 180, clients: int = STEP_CLIENTS
) -> StepResult:
    """1 client, then `clients` at once: when does Serve decide to scale, when do the
    new replicas serve, and in how many decisions does it reach the maximum; then back
    to 1 client and down to one replica. `untuned`: the stack's maxOngoingRequests and
    Ray's mean as written, not what the generator makes of them for this ingress."""
    stack = drill_stack(
        dc.ingress,
        EMBED,
        STEP_AUTOSCALING,
        max_ongoing_requests=STEP_MAX_ONGOING,
        user_config=STEP_USER_CONFIG,
    )
    config = serve_config(stack, dc.cluster.state.ports.http)
    # GPU replicas on a CPU-only machine: localize starts one per core; not here, where
    # the step's minimum is the point.
    deployment_of(config)["autoscaling_config"].update(
        min_replicas=STEP_AUTOSCALING.min_replicas, initial_replicas=STEP_AUTOSCALING.min_replicas
    )
    if untuned:
        written = stack.services[0].apps[0].deployments[0]
        deployment_of(config)["max_ongoing_requests"] = written.max_ongoing_requests
        deployment_of(config)["max_queued_requests"] = written.max_queued_requests
        deployment_of(config)["autoscaling_config"].pop("aggregation_function", None)
    variant = "as written" if untuned else "generated"
    dc.log(f"    {dc.ingress}: autoscale step ({variant}) ...")
    dc.apply(config)
    dc.wait_replicas(STEP_AUTOSCALING.min_replicas, timeout_s=300, workload=EMBED)
    targets: list[int] = []
    first_decision = first_replica = all_replicas = downscaled = None
    base = Load(dc.bases(), dc.key, clients=1, workload=EMBED)
    with base:
        time.sleep(10)
        step = Load(dc.bases(), dc.key, clients=clients - 1, workload=EMBED)
        with step:
            step_at = time.perf_counter()
            deadline = step_at + watch_s
            while time.perf_counter() < deadline:
                target = dc.target_replicas(EMBED)
                running = sum(r.get("state") == "RUNNING" for r in dc.replicas(EMBED))
                now = time.perf_counter() - step_at
                if target is not None and (not targets or targets[-1] != target):
                    targets.append(target)
                if first_decision is None and target is not None and target > 1:
                    first_decision = now
                if first_replica is None and running > 1:
                    first_replica = now
                if running >= STEP_AUTOSCALING.max_replicas:
                    all_replicas = now
                    break
                time.sleep(1)
            time.sleep(5)
        drop_at = time.perf_counter()
        if all_replicas is not None:
            dc.wait_replicas(STEP_AUTOSCALING.min_replicas, timeout_s=180, workload=EMBED)
            downscaled = time.perf_counter() - drop_at
        time.sleep(3)
    events = sorted(base.events + step.events)
    result = StepResult(
        mode=dc.ingress,
        variant=variant,
        max_ongoing_requests=int(deployment_of(config)["max_ongoing_requests"]),
        aggregation=deployment_of(config)["autoscaling_config"].get("aggregation_function", "mean"),
        first_decision_s=first_decision,
        first_replica_s=first_replica,
        all_replicas_s=all_replicas,
        targets=targets,
        outcome=outcome(events, step_at),
        downscaled_s=downscaled,
    )
    dc.log(f"    {dc.ingress}: autoscale step ({variant}): {result}")
    return result
