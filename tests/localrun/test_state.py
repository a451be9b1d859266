"""The local cluster's state file and its ports."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from localrun.processes import RAY_FIXED_PORTS
from localrun.state import ClusterPorts, ClusterState, WorkerNode, WorkerPorts


def test_cluster_state_round_trips(tmp_path: Path) -> None:
    state = ClusterState(ports=ClusterPorts(http=8123), runner_pid=1, ray_sid=2, redis_port=3)
    state.save(tmp_path / "state.json")
    loaded = ClusterState.load(tmp_path / "state.json")
    assert loaded == state
    assert loaded.http_url == "http://127.0.0.1:8123"


def test_ports_are_distinct_and_outside_rays_worker_range() -> None:
    # Picked one by one, the OS hands out a just-closed port again now and then (a test
    # run caught two ports the same); picked together they never repeat.
    for _ in range(50):
        ports = asdict(ClusterPorts())
        chosen = [port for name, port in ports.items() if name != "http"]
        assert len(chosen) == 10 and len(set(chosen)) == len(chosen)
        assert not any(10002 <= port <= 19999 for port in chosen)
        assert not set(chosen) & RAY_FIXED_PORTS  # Ray binds those itself
    assert ClusterPorts(gcs=6380).gcs == 6380  # a given port is kept


def test_worker_nodes_round_trip_and_never_share_a_port(tmp_path: Path) -> None:
    # `make run NODES=3`: every raylet on this machine needs ports of its own, and
    # `make stop` finds each worker's session in the state file.
    state = ClusterState(ports=ClusterPorts(http=8123), ray_sid=2, redis_sid=3)
    for sid in (10, 11):
        state.workers.append(WorkerNode(WorkerPorts(exclude=state.used_ports()), sid))
    ports = [p for w in state.workers for p in asdict(w.ports).values()]
    ports += [p for name, p in asdict(state.ports).items() if name != "http"]
    assert len(ports) == len(set(ports)) == 10 + 2 * 9
    state.save(tmp_path / "state.json")
    loaded = ClusterState.load(tmp_path / "state.json")
    assert loaded == state
    assert loaded.sessions() == [2, 10, 11, 3]
    assert loaded.workers[0].http_url == f"http://127.0.0.1:{state.workers[0].ports.http}"
