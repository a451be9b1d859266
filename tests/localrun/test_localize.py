"""The cluster's serve config made local: listen address, GPUs, replicas per core, memory."""

from __future__ import annotations

import pytest

from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import stack_serve_config
from localrun.localize import localize, logical_cpus_needed


def test_local_config_differs_only_in_listen_address_and_gpus() -> None:
    stack = load_stack_file("dev")
    cluster = stack_serve_config(stack)
    local, notes = localize(cluster, http_port=18000, gpus=0, cores=1)
    assert local["http_options"]["host"] == "127.0.0.1"
    assert local["http_options"]["port"] == 18000
    embedder = local["applications"][0]["deployments"][0]
    assert embedder["ray_actor_options"]["num_gpus"] == 0
    assert notes == [
        "embeddings/Embedder asks for 1 GPU(s); this machine has none, so it runs on CPU here"
    ]
    assert (
        embedder["autoscaling_config"]
        == cluster["applications"][0]["deployments"][0]["autoscaling_config"]
    )
    # Everything else is the cluster's config, untouched (and the input is not mutated).
    assert cluster["applications"][0]["deployments"][0]["ray_actor_options"]["num_gpus"] == 1
    for key in ("applications", "logging_config", "proxy_location"):
        if key == "applications":
            for local_app, app in zip(local[key], cluster[key], strict=True):
                assert {k: v for k, v in local_app.items() if k != "deployments"} == {
                    k: v for k, v in app.items() if k != "deployments"
                }
        else:
            assert local[key] == cluster[key]
    with_gpu, gpu_notes = localize(cluster, http_port=18000, gpus=1)
    assert with_gpu["applications"] == cluster["applications"]
    assert gpu_notes == []


@pytest.mark.parametrize(("cores", "replicas"), [(2, 2), (16, 2)])
def test_a_gpu_deployment_on_cpu_starts_one_replica_per_core(cores: int, replicas: int) -> None:
    """Measured in docs/benchmarks.md: 1-thread CPU replicas side by side beat one."""
    cluster = stack_serve_config(load_stack_file("dev"))  # Embedder: 1 GPU, 1..2 replicas
    local, notes = localize(cluster, http_port=8000, gpus=0, cores=cores)
    scale = local["applications"][0]["deployments"][0]["autoscaling_config"]
    assert (scale["min_replicas"], scale["initial_replicas"], scale["max_replicas"]) == (
        replicas,
        replicas,
        2,
    )
    assert f"embeddings/Embedder: at least {replicas} CPU replicas here, one per core" in notes
    # The classifier (a CPU deployment) and GPU machines keep the cluster's numbers.
    assert local["applications"][1] == cluster["applications"][1]
    with_gpu, _ = localize(cluster, http_port=8000, gpus=1, cores=cores)
    assert with_gpu["applications"] == cluster["applications"]


def test_logical_cpus_cover_every_replica_at_its_maximum() -> None:
    config = stack_serve_config(load_stack_file("dev"))
    # Embedder: 2 replicas x 1 CPU; Classifier: 1 x 0.5; plus controller and proxy.
    assert logical_cpus_needed(config) == 2 * 1 + 1 * 0.5 + 1


def test_local_config_drops_memory_reservations_with_a_note() -> None:
    cluster = stack_serve_config(load_stack_file("prod"))
    local, notes = localize(cluster, http_port=8000, gpus=1)
    embedder = local["applications"][0]["deployments"][0]
    assert "memory" not in embedder["ray_actor_options"]
    assert cluster["applications"][0]["deployments"][0]["ray_actor_options"]["memory"] == 8 * 2**30
    assert notes == [
        "embeddings/Embedder reserves memory per replica on the cluster; not reserved here"
    ]
