"""The reduced drills (`make drills` runs all of them, both modes): Serve's default data
plane (HAProxy) on a head and two worker nodes, under faults, with closed-loop load.

What a user would notice is asserted: how many requests failed, for how long, and
that no request hung; a head crash under `make run NODES=3` restarts the head while the
workers' ingress keeps answering.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from drills.harness import CLIENTS, REQUEST_TIMEOUT_S, DrillCluster, Load, outcome
from drills.scenarios import (
    SHORT,
    STEP_AUTOSCALING,
    DrillResult,
    autoscale_step,
    hung_replica,
    kill_replica,
    node_loss,
)
from infra.rayservice.serve_config import HAPROXY_SERVER_TIMEOUT_MARGIN_S
from localrun.polling import poll_until
from localrun.processes import kill_session
from localrun.serve_client import wait_until_running
from serve_apps.tabular_classifier.app import example_request
from tests.integration.conftest import MakeRun

# What a crash may cost: the requests in flight on what was lost (one per client at
# most), and as many again sent on kept-alive connections it closed before the data
# plane noticed (HAProxy retries only refused connections, never a sent POST).
LOST_AT_MOST = 2 * CLIENTS
# A loaded 2-core machine answers late; the bound itself is what HAProxy enforces.
SLACK_S = 5


@pytest.fixture(scope="module")
def haproxy_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillCluster]:
    with DrillCluster("haproxy", tmp_path_factory.mktemp("drills")) as dc:
        yield dc


def _costs_at_most_what_was_in_flight(result: DrillResult) -> None:
    assert result.outcome.total > 500
    assert result.outcome.failed <= LOST_AT_MOST, result
    assert result.outcome.clean_after_s < 10, result


def test_a_sigkilled_replica_costs_at_most_its_requests_in_flight(
    haproxy_cluster: DrillCluster, record_property: Callable[[str, object], None]
) -> None:
    result = kill_replica(haproxy_cluster, SHORT)
    haproxy_cluster.reset()
    record_property(result.drill, f"{result.outcome.ratio} {result.outcome.kinds}")
    _costs_at_most_what_was_in_flight(result)


def test_a_hung_replica_holds_no_request_past_the_server_timeout(
    haproxy_cluster: DrillCluster, record_property: Callable[[str, object], None]
) -> None:
    bound_s = REQUEST_TIMEOUT_S + HAPROXY_SERVER_TIMEOUT_MARGIN_S
    # Stopped long enough that requests sent to it meet HAProxy's timeout.
    result = hung_replica(haproxy_cluster, SHORT, hold_s=bound_s + 5)
    haproxy_cluster.reset()
    record_property(
        "hung_replica",
        f"{result.outcome.ratio} {result.outcome.kinds} max {result.outcome.max_latency_s}",
    )
    # Without `timeout server` these requests would wait for the stopped process forever
    # (the clients here give up only after 4x the bound).
    assert result.outcome.failed >= 1, "no request reached the stopped replica"
    assert result.outcome.max_latency_s <= bound_s + SLACK_S, result
    # Cut by HAProxy at the bound (its 504, as Serve's 500); the kill that ends the drill
    # may close a few more.
    assert result.outcome.kinds.get("500", 0) >= 1, result
    assert result.outcome.failed <= LOST_AT_MOST, result


def test_a_load_step_behind_haproxy_reaches_max_replicas_in_one_decision(
    haproxy_cluster: DrillCluster, record_property: Callable[[str, object], None]
) -> None:
    # 1 client, then 32, against the embedder autoscaling 1..4 at 8 ongoing each: the
    # generated config (the window's peak, a maxOngoingRequests that can report 32) lets
    # the first decision reach the maximum, as behind the proxy; Ray's mean took 2-5.
    result = autoscale_step(haproxy_cluster, watch_s=150)
    haproxy_cluster.reset()
    record_property("autoscale-step", f"{result.targets} all at {result.all_replicas_s}")
    assert result.aggregation == "max" and result.max_ongoing_requests == 32
    assert result.targets[:2] == [1, STEP_AUTOSCALING.max_replicas], result
    assert result.all_replicas_s is not None, result
    assert result.outcome.failed == 0, result
    assert result.downscaled_s is not None, result  # and back to one when the load went


# Last on this cluster: the lost node comes back empty, so its ingress stays drained.
def test_losing_a_worker_node_costs_at_most_its_requests_in_flight(
    haproxy_cluster: DrillCluster, record_property: Callable[[str, object], None]
) -> None:
    result = node_loss(haproxy_cluster, SHORT)
    record_property(result.drill, f"{result.outcome.ratio} {result.outcome.kinds}")
    _costs_at_most_what_was_in_flight(result)


def test_make_run_three_nodes_restarts_a_crashed_head_while_workers_serve(
    make_run_three_nodes: MakeRun, record_property: Callable[[str, object], None]
) -> None:
    run = make_run_three_nodes
    state = run.state
    assert "==> 2 worker nodes up" in run.output
    headers = run.auth()
    bases = [w.http_url for w in state.workers]
    for base in bases:  # each worker node's own ingress serves
        response = httpx.post(f"{base}/classify", json=example_request(), headers=headers)
        assert response.status_code == 200, response.text
    assert state.ray_sid is not None
    with Load(bases, run.api_key) as load:
        time.sleep(3)
        crashed_at = time.perf_counter()
        kill_session(state.ray_sid, grace_s=0)  # every head process: GCS, controller, ...
        poll_until(
            lambda: "ray head up again" in run.output,
            timeout_s=240,
            what="make run restarting the head",
        )
        wait_until_running(state.dashboard_url, ["embeddings", "classifier"], 300)
        load.wait_clean(5, 120)
    result = outcome(load.events, crashed_at)
    record_property("head_restart_make_run", f"{result.ratio} {result.kinds}")
    print(f"\nhead crash under make run NODES=3: {result.ratio} failed on the workers' ingress")
    assert run.process.poll() is None, run.output
    assert "starting it again on the same Redis" in run.output
    assert result.total > 200
    assert result.failed == 0, json.dumps(result.kinds)
    # The restarted head is a new node; the workers are the same ones, still serving.
    assert [w.sid for w in run.state.workers] == [w.sid for w in state.workers]
    assert Path(state.temp_dir).is_dir()
