"""Scale to zero, end to end on a local cluster: a deployment with `minReplicas: 0` (from
the stack config, through the same generator the cluster gets) drops to no replicas when
idle, and the first request after brings one back and is served, in both ingress modes.
The cold start is recorded (`record_property`) and printed for the README."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from infra.config import PROJECT_ROOT, parse_stack_config
from infra.rayservice.serve_config import stack_serve_config
from localrun.artifacts import prepare_artifacts
from localrun.cluster import LocalCluster
from localrun.localize import localize
from localrun.polling import poll_until
from localrun.processes import free_port
from localrun.serve_client import applications, deploy, wait_until_running
from serve_apps.tabular_classifier.app import example_request
from tests.infra.helpers import stack_values

DOWNSCALE_S = 3


def _at(dashboard_url: str, replicas: int) -> Callable[[], bool | None]:
    """A poll_until check: True once the classifier runs exactly `replicas`."""
    return lambda: True if _running_replicas(dashboard_url) == replicas else None


def _running_replicas(dashboard_url: str) -> int:
    deployment = applications(dashboard_url)["classifier"]["deployments"]["Classifier"]
    return sum(1 for r in deployment.get("replicas") or [] if r.get("state") == "RUNNING")


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_idle_deployment_scales_to_zero_and_the_first_request_brings_it_back(
    ingress: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    values = stack_values("dev")
    classifier = values["services"][0]["apps"][1]
    deployment = classifier["deployments"][0]
    del deployment["numReplicas"]
    deployment["autoscaling"] = {
        "minReplicas": 0, "maxReplicas": 1, "upscaleDelayS": 0, "downscaleDelayS": DOWNSCALE_S
    }  # fmt: skip
    values["services"][0]["apps"] = [classifier]
    stack = parse_stack_config(values)
    prepare_artifacts(stack)
    with LocalCluster(
        PROJECT_ROOT,
        tmp_path,
        namespace=f"zero-{ingress}",
        use_redis=False,
        ingress=ingress,  # type: ignore[arg-type]
    ) as cluster:
        cluster.state.ports.http = free_port()
        key = cluster.create_api_key()
        cluster.start_ray()
        config, _ = localize(stack_serve_config(stack), http_port=cluster.state.ports.http, gpus=0)
        dashboard = cluster.state.dashboard_url
        deploy(dashboard, config)
        wait_until_running(dashboard, ["classifier"], 300)
        # Idle: Serve takes the deployment to zero replicas after the downscale delay.
        poll_until(_at(dashboard, 0), timeout_s=120, interval_s=1,
                   what="the idle classifier at 0 replicas")  # fmt: skip
        time.sleep(DOWNSCALE_S)  # and it stays there while nothing comes in
        assert _running_replicas(dashboard) == 0
        body = example_request()
        start = time.monotonic()
        response = httpx.post(
            f"{cluster.state.http_url}/classify",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        cold_start_s = time.monotonic() - start
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["label"]
        assert _running_replicas(dashboard) == 1
        record_property(f"cold_start_s_{ingress}", round(cold_start_s, 2))
        print(f"scale from zero ({ingress}): first request served in {cold_start_s:.2f} s")
        # ...and idle again: back to zero.
        poll_until(_at(dashboard, 0), timeout_s=120, interval_s=1,
                   what="the classifier back at 0 replicas")  # fmt: skip
