"""rayserve_client through what a service meets: overload, a replica crash, a head crash.

One local cluster with the GCS Redis serves the dev stack (the code `make run` uses).
Each drill runs two client loops of the same calls side by side through the same
incident: one with the client's retries, one with `RetryPolicy.none()`. With retries
every call completes, and none waits much longer than the outage itself; without them
calls fail (so each drill shows what the retries are for, and fails if they do nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from rayserve_client import (
    ApiError,
    AsyncClient,
    Client,
    RayServeError,
    RetryEvent,
    RetryPolicy,
)

from infra.config import PROJECT_ROOT, App, Deployment
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import application_config, stack_serve_config
from localrun.cluster import LocalCluster
from localrun.localize import localize
from localrun.polling import poll_until
from localrun.serve_client import applications, deploy, wait_until_running
from serve_apps.tabular_classifier.app import example_request
from tests.integration.test_fault_tolerance import _crash_and_restart_head, _start_dev_stack

# Patient enough for a head restart (tens of seconds), waits capped at 2 s.
DRILL_RETRY = RetryPolicy(max_attempts=200, base_s=0.1, cap_s=2.0, jitter=0.5, deadline_s=240)
NO_RETRY = RetryPolicy.none(deadline_s=60)
INSTANCES = example_request()["instances"]


@dataclass
class Loop:
    """What one client loop saw: every call's start, end and outcome."""

    label: str
    calls: list[tuple[float, float, str]] = field(default_factory=list)  # "ok" or a kind
    reasons: dict[str, str] = field(default_factory=dict)  # the first error, per kind
    retries: int = 0
    in_flight: bool = False

    def on_retry(self, event: RetryEvent) -> None:
        self.retries += 1

    def done(self, began: float, error: RayServeError | None = None) -> None:
        kind = "ok"
        if error is not None:
            cause = error.__cause__
            kind = str(error.status) if isinstance(error, ApiError) else type(cause).__name__
            self.reasons.setdefault(kind, str(error)[:300])
        self.calls.append((began, time.monotonic(), kind))

    def call(self, call: Callable[[], object]) -> None:
        began, error = time.monotonic(), None
        self.in_flight = True
        try:
            call()
        except RayServeError as exc:
            error = exc
        finally:
            self.in_flight = False
        self.done(began, error)

    def run_paced(self, call: Callable[[], object], calls: int, interval_s: float) -> None:
        """`calls` calls, one per `interval_s` (at once when behind: a closed loop)."""
        start = time.monotonic()
        for i in range(calls):
            time.sleep(max(0.0, start + i * interval_s - time.monotonic()))
            self.call(call)

    @property
    def completed(self) -> int:
        return sum(kind == "ok" for _, _, kind in self.calls)

    @property
    def failures(self) -> Counter[str]:
        return Counter(kind for _, _, kind in self.calls if kind != "ok")

    @property
    def latencies(self) -> list[float]:
        return sorted(end - start for start, end, _ in self.calls)

    def recovered_s(self, incident: float) -> float:
        """Seconds from `incident` until the first success begun after the last failure."""
        last_failure = max(start for start, _, kind in self.calls if kind != "ok")
        ends = [end for start, end, kind in self.calls if start > last_failure and kind == "ok"]
        assert ends, f"{self.label}: no call succeeded after the last failure"
        return ends[0] - incident

    def summary(self) -> str:
        lat, failures = self.latencies, self.failures
        failed = f" {dict(failures)} {self.reasons}" if failures else ""
        return (
            f"{self.label}: {self.completed}/{len(lat)} completed, {failures.total()} failed"
            f"{failed}, {self.retries} retries; latency p50 {lat[len(lat) // 2]:.2f}s "
            f"max {lat[-1]:.2f}s"
        )


@dataclass
class Drill:
    cluster: LocalCluster
    key: str

    @contextlib.contextmanager
    def loops(
        self, call: Callable[[Client], object], calls: int, interval_s: float
    ) -> Iterator[tuple[Loop, Loop]]:
        """Both loops running in threads (with retries, without); joined on exit."""
        retrying, plain = Loop("with retries"), Loop("without retries")
        begun = threading.Barrier(3)

        def run(loop: Loop, policy: RetryPolicy) -> None:
            url = self.cluster.state.http_url
            with Client(url, self.key, retry=policy, on_retry=loop.on_retry) as client:
                begun.wait()
                loop.run_paced(lambda: call(client), calls, interval_s)

        threads = [
            threading.Thread(target=run, args=args, daemon=True)
            for args in ((retrying, DRILL_RETRY), (plain, NO_RETRY))
        ]
        for thread in threads:
            thread.start()
        begun.wait()
        yield retrying, plain
        for thread in threads:
            thread.join(DRILL_RETRY.deadline_s + calls * interval_s)
            assert not thread.is_alive(), f"unfinished: {retrying.summary()} | {plain.summary()}"


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    state_dir = tmp_path_factory.mktemp("drills")
    with LocalCluster(PROJECT_ROOT, state_dir, namespace="drills", use_redis=True) as cluster:
        yield Drill(cluster, _start_dev_stack(cluster))


def _report(
    name: str, retrying: Loop, plain: Loop, record_property: Callable[[str, object], None]
) -> None:
    line = f"{name}: {retrying.summary()} | {plain.summary()}"
    print(f"\n{line}")
    record_property(name, line)


def _assert_retries_cover_the_incident(
    retrying: Loop, plain: Loop, incident: float, interval_s: float
) -> None:
    """Every call with retries completed; without retries some failed; and no call with
    retries took much longer than the incident did for the plain loop (its recovery, one
    pacing interval, the longest backoff wait, 3 s of slack)."""
    assert retrying.completed == len(retrying.calls), retrying.summary()
    assert plain.failures.total() > 0, plain.summary()
    recovered = plain.recovered_s(incident)
    print(f"service answered again {recovered:.1f}s after the incident")
    bound = recovered + interval_s + DRILL_RETRY.cap_s + 3.0
    assert retrying.latencies[-1] <= bound, (bound, retrying.summary())


def test_a_sigkilled_replica_costs_calls_without_retries_and_none_with_them(
    drill: Drill, record_property: Callable[[str, object], None]
) -> None:
    dashboard = drill.cluster.state.dashboard_url
    [replica] = applications(dashboard)["classifier"]["deployments"]["Classifier"]["replicas"]
    heavy = INSTANCES * 256  # requests long enough to be in flight when the replica dies
    calls, interval = 150, 0.1
    with drill.loops(lambda c: c.classify(heavy), calls, interval) as (retrying, plain):
        time.sleep(2)
        poll_until(lambda: retrying.in_flight and plain.in_flight, timeout_s=10, interval_s=0.001)
        incident = time.monotonic()
        os.kill(replica["pid"], signal.SIGKILL)
    _report("replica SIGKILL", retrying, plain, record_property)
    _assert_retries_cover_the_incident(retrying, plain, incident, interval)
    replicas = applications(dashboard)["classifier"]["deployments"]["Classifier"]["replicas"]
    running = {r["replica_id"] for r in replicas if r["state"] == "RUNNING"}
    assert running and replica["replica_id"] not in running  # Serve replaced it


def test_a_head_restart_with_gcs_ft_costs_calls_without_retries_and_none_with_them(
    drill: Drill, record_property: Callable[[str, object], None]
) -> None:
    calls, interval = 120, 0.5
    with drill.loops(lambda c: c.embed(["head restart"]), calls, interval) as (retrying, plain):
        time.sleep(3)
        incident = time.monotonic()
        _crash_and_restart_head(drill.cluster)
    _report("head restart (GCS FT)", retrying, plain, record_property)
    _assert_retries_cover_the_incident(retrying, plain, incident, interval)


def _overload_app() -> App:
    """An embedder that holds one request and queues one: the third gets 503 at once."""
    return App(
        name="overload",
        route_prefix="/overload",
        import_path="serve_apps.text_embedding.app:build_app",
        deployments=[
            Deployment(
                name="Embedder",
                num_replicas=1,
                max_ongoing_requests=1,
                max_queued_requests=1,
                user_config={"max_batch_size": 1, "batch_wait_timeout_s": 0},
            )
        ],
    )


async def _overload_loops(url: str, key: str, workers: int, calls_each: int) -> tuple[Loop, Loop]:
    retrying, plain = Loop("with retries"), Loop("without retries")
    texts = [f"overload drill sentence number {i}" for i in range(16)]

    async def worker(client: AsyncClient, loop: Loop) -> None:
        for _ in range(calls_each):
            began, error = time.monotonic(), None
            try:
                await client.embed(texts)
            except RayServeError as exc:
                error = exc
            loop.done(began, error)

    clients = [
        AsyncClient(url, key, retry=policy, on_retry=loop.on_retry, embed_path="/overload")
        for loop, policy in ((retrying, DRILL_RETRY), (plain, NO_RETRY))
    ]
    try:
        await asyncio.gather(
            *(worker(clients[0], retrying) for _ in range(workers)),
            *(worker(clients[1], plain) for _ in range(workers)),
        )
    finally:
        for client in clients:
            await client.aclose()
    return retrying, plain


def test_overload_503s_cost_calls_without_retries_and_none_with_them(
    drill: Drill, record_property: Callable[[str, object], None]
) -> None:
    cluster = drill.cluster
    stack = load_stack_file("dev")
    config, _ = localize(stack_serve_config(stack), http_port=cluster.state.ports.http, gpus=0)
    config["applications"].append(application_config(_overload_app()))
    deploy(cluster.state.dashboard_url, config)
    wait_until_running(cluster.state.dashboard_url, ["overload", "embeddings", "classifier"], 300)
    with Client(cluster.state.http_url, drill.key, embed_path="/overload") as client:
        poll_until(
            lambda: len(client.embed(["ready"])) == 1,
            timeout_s=60,
            ignore=(RayServeError,),
            what="/overload answering",
        )
    workers, calls_each = 8, 4
    start = time.monotonic()
    retrying, plain = asyncio.run(
        _overload_loops(cluster.state.http_url, drill.key, workers, calls_each)
    )
    elapsed = time.monotonic() - start
    _report(f"overload ({2 * workers} clients, {elapsed:.0f}s)", retrying, plain, record_property)
    assert retrying.completed == workers * calls_each, retrying.summary()
    assert plain.failures["503"] > 0, plain.summary()
    assert set(plain.failures) == {"503"}, plain.summary()  # overload answers 503, nothing else
    assert retrying.latencies[-1] < 30, retrying.summary()
