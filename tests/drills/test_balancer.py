"""The drills' stand-in for GKE's load balancer follows Kubernetes' readiness rules: a
node that was never ready gets no request until a probe passes (sending there counted
refused connections as the data plane's failures), and a ready node leaves only after
failureThreshold failed probes in a row."""

from __future__ import annotations

import pytest

from drills import harness
from drills.harness import Balancer

UP, DOWN = "http://127.0.0.1:1", "http://127.0.0.1:2"


@pytest.fixture
def balancer(monkeypatch: pytest.MonkeyPatch) -> Balancer:
    state = {UP: True, DOWN: False}
    monkeypatch.setattr(harness, "ingress_ready", lambda base, timeout_s=2: state[base])
    b = Balancer([UP, DOWN], "/route")
    b.state = state  # type: ignore[attr-defined]  # the probes' answers, for the test
    b.probe_once()  # what __enter__ does, without the probe thread
    return b


def picks(b: Balancer, n: int = 6) -> set[str]:
    return {b.pick().removesuffix("/route") for _ in range(n)}


def test_a_node_unready_at_the_start_stays_out_while_it_fails(balancer: Balancer) -> None:
    assert balancer.threshold > 1  # the case that went wrong: fewer failures than that
    for _ in range(balancer.threshold + 1):
        assert picks(balancer) == {UP}
        balancer.probe_once()


def test_one_passing_probe_brings_a_node_in(balancer: Balancer) -> None:
    balancer.state[DOWN] = True  # type: ignore[attr-defined]
    balancer.probe_once()
    assert picks(balancer) == {UP, DOWN}


def test_a_ready_node_leaves_after_failure_threshold_failures_in_a_row(
    balancer: Balancer,
) -> None:
    balancer.state[UP] = False  # type: ignore[attr-defined]
    balancer.state[DOWN] = True  # type: ignore[attr-defined]
    for _ in range(balancer.threshold - 1):
        balancer.probe_once()
        assert UP in picks(balancer)  # still in: fewer failures than the threshold
    balancer.probe_once()
    assert picks(balancer) == {DOWN}
