"""The serve-config generator: valid for Ray, every knob explicit, values from the stack."""

from __future__ import annotations

import pytest
from ray.serve.schema import ServeDeploySchema

from infra.config.sources import load_stack_file
from infra.rayservice.serve_config import KEEP_ALIVE_TIMEOUT_S, serve_config, stack_serve_config
from tests.infra.helpers import STACKS

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
