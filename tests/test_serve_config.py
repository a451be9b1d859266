"""The serve-config generator: valid for Ray, every knob explicit, localized honestly."""

import pytest
from ray.serve.schema import ServeDeploySchema

from infra.config import StackConfig
from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import KEEP_ALIVE_TIMEOUT_S, serve_config, stack_serve_config
from localrun.localize import localize, logical_cpus_needed

STACKS = ["dev", "prod"]
EXPLICIT_DEPLOYMENT_KNOBS = {
    "max_ongoing_requests",
    "max_queued_requests",
    "ray_actor_options",
    "user_config",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "max_surge_percent",
}


def every_service(stack_name: str) -> list[tuple[StackConfig, str]]:
    stack = load_stack_file(stack_name)
    return [(stack, service.name) for service in stack.services]


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_generated_config_is_valid_for_ray(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    for service in stack.services:
        ServeDeploySchema.model_validate(serve_config(stack, service))
    ServeDeploySchema.model_validate(stack_serve_config(stack))


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_knob_is_set_explicitly(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    for service in stack.services:
        config = serve_config(stack, service)
        assert config["http_options"]["request_timeout_s"] == stack.request_timeout_s
        assert config["http_options"]["keep_alive_timeout_s"] == KEEP_ALIVE_TIMEOUT_S
        assert config["logging_config"]["encoding"] == "JSON"
        assert config["logging_config"]["log_level"] == stack.log_level
        for app in config["applications"]:
            for dep in app["deployments"]:
                assert dep.keys() >= EXPLICIT_DEPLOYMENT_KNOBS
                assert ("num_replicas" in dep) != ("autoscaling_config" in dep)
                assert {"num_cpus", "num_gpus"} <= dep["ray_actor_options"].keys()
                batch = dep["user_config"].get("max_batch_size")
                if batch is not None:
                    assert dep["max_ongoing_requests"] >= batch


def test_values_flow_from_stack_config() -> None:
    stack = load_stack_file("prod")
    embeddings = serve_config(stack, stack.services[0])
    (app,) = embeddings["applications"]
    assert app["route_prefix"] == "/embed"
    assert app["import_path"] == "serve_apps.text_embedding.app:build_app"
    (dep,) = app["deployments"]
    assert dep["autoscaling_config"]["min_replicas"] == 2
    assert dep["autoscaling_config"]["max_replicas"] == 8
    assert dep["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 1, "memory": 8 * 2**30}
    assert dep["user_config"] == {"max_batch_size": 64, "batch_wait_timeout_s": 0.005}
    assert embeddings["http_options"]["request_timeout_s"] == 120


def test_route_prefix_is_normalized() -> None:
    stack = load_stack_file("dev")
    service = stack.services[0]
    app = service.apps[0].model_copy(update={"route_prefix": "/embed/"})
    service = service.model_copy(update={"apps": [app, *service.apps[1:]]})
    assert serve_config(stack, service)["applications"][0]["route_prefix"] == "/embed"


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
