"""What a service's config asks of its Ray pods beyond sizes: deployments pinned to
worker groups (custom placement resources), the apps' env and secretEnv, and the
autoscaler version that honours each group's idle timeout."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from infra.config.sources import load_stack_file
from infra.program.render import program_objects
from infra.program.runner import is_secret, run_program
from tests.infra.helpers import STACKS, stack_values

EMBEDDER = ("services", 0, "apps", 0, "deployments", 0)


def _rayservices(stack: str, overrides: dict[str, Any] | None = None, **kw: Any) -> list[dict]:
    objects = program_objects(stack, overrides, **kw)
    return [o for o in objects if o["kind"] == "RayService"]


def _advertised(group: dict[str, Any]) -> dict[str, float]:
    """What `ray start --resources` gets: KubeRay passes the string through a shell."""
    return json.loads(json.loads(group["rayStartParams"]["resources"]))


@pytest.mark.parametrize("stack", STACKS)
def test_every_worker_group_advertises_its_pool_and_gpu(stack: str) -> None:
    config = load_stack_file(stack)
    for service, rayservice in zip(config.services, _rayservices(stack), strict=True):
        groups = {
            g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        }
        for group in service.worker_groups:
            pool = config.pool(group.node_pool)
            assert pool is not None
            expected = {f"pool:{pool.name}": 1000.0}
            if pool.gpu_type:
                expected[f"accelerator:{pool.gpu_type}"] = 1000.0
            assert _advertised(groups[pool.name]) == expected


def test_a_pinned_deployment_asks_what_only_its_group_advertises() -> None:
    """prod's embeddings service has L4 and H100 groups: pinning the Embedder to H100
    puts the resource in the serve config, and only the h100 group offers it."""
    services = copy.deepcopy(stack_values("prod")["services"])
    services[0]["apps"][0]["deployments"][0]["rayActorOptions"]["accelerator"] = "nvidia-h100-80gb"
    (embeddings, _) = _rayservices("prod", {"services": services})
    serve = yaml.safe_load(embeddings["spec"]["serveConfigV2"])
    options = serve["applications"][0]["deployments"][0]["ray_actor_options"]
    assert options["resources"] == {"accelerator:nvidia-h100-80gb": 1.0}
    offering = [
        g["groupName"]
        for g in embeddings["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        if "accelerator:nvidia-h100-80gb" in _advertised(g)
    ]
    assert offering == ["h100"]


def test_unpinned_deployments_ask_no_placement() -> None:
    for rayservice in _rayservices("prod"):
        serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
        for app in serve["applications"]:
            for dep in app["deployments"]:
                assert "resources" not in dep["ray_actor_options"]


def test_env_and_secret_env_reach_every_ray_container_and_the_value_stays_secret() -> None:
    services = copy.deepcopy(stack_values("dev")["services"])
    services[0]["env"] = {"MODEL_REVISION": "2026-11"}
    services[0]["secretEnv"] = ["HF_TOKEN"]
    token = "hf_not_a_real_token_but_secret"
    run = run_program(
        "dev", {"services": services}, secrets={"appSecrets": {"serving": {"HF_TOKEN": token}}}
    )
    (secret,) = [r for r in run.resources if r.name.endswith("serving-app-env")]
    assert is_secret(secret.inputs["stringData"])
    (rayservice,) = [r for r in run.resources if r.type == "kubernetes:ray.io/v1:RayService"]
    cluster = rayservice.inputs["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        ray = pod["template"]["spec"]["containers"][0]
        env = {e["name"]: e for e in ray["env"]}
        assert env["MODEL_REVISION"]["value"] == "2026-11"
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "serving-app-env",
            "key": "HF_TOKEN",
        }
    assert token not in json.dumps(rayservice.inputs, default=str)


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaler_v2_honours_each_groups_idle_timeout(stack: str) -> None:
    config = load_stack_file(stack)
    for service, rayservice in zip(config.services, _rayservices(stack), strict=True):
        cluster = rayservice["spec"]["rayClusterConfig"]
        assert cluster["autoscalerOptions"]["version"] == "v2"
        for group, rendered in zip(service.worker_groups, cluster["workerGroupSpecs"], strict=True):
            assert rendered["idleTimeoutSeconds"] == group.idle_timeout_seconds
            assert rendered["template"]["spec"]["restartPolicy"] == "Never"
        assert "restartPolicy" not in cluster["headGroupSpec"]["template"]["spec"]
