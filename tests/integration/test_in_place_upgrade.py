"""In-place upgrades under steady load: zero non-2xx answers is the bar.

A local cluster serves the dev stack (through the same code `make run` uses) while
closed-loop clients hit both apps; meanwhile the serve config changes three ways, each
applied in place by Serve: a runtime knob (`user_config`), the replica count, and a new
app version (builder args, which restarts the replicas: new ones start first).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import prepare_artifacts
from localrun.cluster import LocalCluster
from localrun.localize import localize
from localrun.processes import free_port
from localrun.serve_client import deploy, wait_until_running
from serve_apps.tabular_classifier.app import example_request

APPS = ["embeddings", "classifier"]
CLIENTS = 8


class Load:
    """Closed-loop clients in a thread; counts every status (and connection errors)."""

    def __init__(self, base: str, key: str, classifier_example: bytes) -> None:
        self.base, self.key, self.example = base, key, classifier_example
        self.statuses: Counter[str] = Counter()
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, client: httpx.AsyncClient, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                if n % 2:
                    response = await client.post(
                        f"{self.base}/classify", content=self.example, headers=headers
                    )
                else:
                    response = await client.post(
                        f"{self.base}/embed", json={"texts": [f"steady load {n}"]}, headers=headers
                    )
                self.statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                self.statuses[type(exc).__name__] += 1
            self.latencies.append(time.monotonic() - start)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(self._client(client, n) for n in range(CLIENTS)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def _apply(cluster: LocalCluster, config: dict[str, Any], settle_s: float = 5) -> None:
    deploy(cluster.state.dashboard_url, config)
    time.sleep(1)  # let the controller pick the new config up before polling
    wait_until_running(cluster.state.dashboard_url, APPS, 400)
    time.sleep(settle_s)


def test_serve_config_changes_apply_in_place_with_zero_errors(
    tmp_path: Path, record_property: Any
) -> None:
    stack = load_stack_file("dev")
    prepare_artifacts(stack)
    with LocalCluster(PROJECT_ROOT, tmp_path, namespace="upgrade-test") as cluster:
        cluster.state.ports.http = free_port()
        key = cluster.create_api_key()
        cluster.start_redis()
        cluster.start_ray()
        config, _ = localize(stack_serve_config(stack), http_port=cluster.state.ports.http, gpus=0)
        _apply(cluster, config, settle_s=0)
        example_bytes = json.dumps(example_request()).encode()
        started = time.monotonic()
        with Load(cluster.state.http_url, key, example_bytes) as load:
            time.sleep(5)
            knob = copy.deepcopy(config)
            knob["applications"][1]["deployments"][0]["user_config"]["decision_threshold"] = 0.7
            _apply(cluster, knob)
            scaled = copy.deepcopy(knob)
            scaled["applications"][1]["deployments"][0]["num_replicas"] = 2
            _apply(cluster, scaled)
            version = copy.deepcopy(scaled)
            version["applications"][0]["args"]["max_text_chars"] = 1999  # restarts replicas
            _apply(cluster, version, settle_s=10)
        elapsed = time.monotonic() - started
    total = sum(load.statuses.values())
    failures = {status: n for status, n in load.statuses.items() if status != "200"}
    latencies = sorted(load.latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    summary = (
        f"{total} requests in {elapsed:.0f}s across 3 in-place updates; non-2xx: "
        f"{sum(failures.values())} {failures or ''}; p99 {p99 * 1000:.0f} ms"
    )
    print(f"\nin-place upgrade under load: {summary}")
    record_property("in_place_upgrade", summary)
    assert total > 100, summary
    assert not failures, summary
