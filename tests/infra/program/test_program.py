"""The real `__main__.py` per stack under Pulumi's mocks: what the whole program declares."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from infra.config import PROJECT_ROOT, ConfigError
from infra.program.render import program_objects
from infra.program.runner import MOCK_DNS_ENDPOINT, ProgramRun, is_secret, reveal, run_program
from tests.infra.helpers import STACKS, images_in

IMAGE = "docker:index/image:Image"


@pytest.mark.parametrize("stack", STACKS)
def test_program_runs_and_exports_each_services_serve_config(stack: str) -> None:
    run = run_program(stack)
    services = {"dev": {"serving"}, "prod": {"embeddings", "classifier"}}[stack]
    assert set(run.outputs["serveConfigs"]) == services
    for text in run.outputs["serveConfigs"].values():
        ServeDeploySchema.model_validate(yaml.safe_load(text))
    assert run.outputs["routes"] == (
        {"/embed": "serving/embeddings", "/classify": "serving/classifier"}
        if stack == "dev"
        else {"/embed": "embeddings/embeddings", "/classify": "classifier/classifier"}
    )
    assert run.outputs["production"] is (stack == "prod")


def test_every_resource_has_a_parent_but_the_top_level_components(
    program: tuple[str, ProgramRun],
) -> None:
    _, run = program
    roots = [r for r in run.resources if r.parent is None]
    assert roots and all(r.type.startswith("rayserve-gke:") for r in roots), roots
    components = {(r.type, r.name) for r in roots}
    for resource in run.resources:
        if resource.parent is not None:
            assert resource.parent in components or any(
                (r.type, r.name) == resource.parent for r in run.resources
            )


def test_component_type_tokens_follow_the_convention(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    tokens = {r.type for r in run.resources if r.type.startswith("rayserve-gke:")}
    assert tokens == {
        "rayserve-gke:project:Apis",
        "rayserve-gke:ray:Disruption",
        "rayserve-gke:network:Network",
        "rayserve-gke:cluster:GkeCluster",
        "rayserve-gke:k8s:KubernetesAccess",
        "rayserve-gke:images:ArtifactRegistry",
        "rayserve-gke:images:ServiceImages",
        "rayserve-gke:ray:KubeRay",
        "rayserve-gke:gpu:GpuOperator",
        "rayserve-gke:redis:GcsRedis",
        "rayserve-gke:ray:RayService",
        "rayserve-gke:observability:Monitoring",
        "rayserve-gke:observability:CloudAlerts",
        "rayserve-gke:edge:Edge",
        "rayserve-gke:edge:NetworkPolicies",
        "rayserve-gke:release:UpgradeGuard",
    }


def test_stack_outputs(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    assert run.outputs["clusterName"] == f"rayserve-{stack_name}"
    assert run.outputs["clusterEndpoint"] == MOCK_DNS_ENDPOINT
    assert {"kubeconfig", "registryUrl", "imageDigests"} <= run.outputs.keys()


def test_existing_cluster_mode_creates_no_gcp_resource() -> None:
    run = run_program(
        "dev",
        overrides={
            "clusterMode": "existing",
            "kubeContext": "kind-rayserve",
            "imageRepository": "localhost:5001/rayserve",
            "tlsSecret": "rayserve-tls",
        },
    )
    assert not [r for r in run.resources if r.type.startswith("gcp:")]
    assert run.of_type("kubernetes:ray.io/v1:RayService")  # every later layer still applies
    assert "gcp:organizations/getClientConfig:getClientConfig" not in run.calls
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "kind-rayserve"
    assert "kubeconfig" not in run.outputs
    for image in run.of_type(IMAGE):
        assert image.inputs["imageName"].startswith("localhost:5001/rayserve/")
        assert "registry" not in image.inputs


def test_every_password_and_token_is_a_secret(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    secrets = run.of_type("kubernetes:core/v1:Secret")
    assert len(secrets) >= 3
    for secret in secrets:
        assert is_secret(secret.inputs["stringData"]), secret.name
    for resource in run.resources:
        text = str(resource.inputs)
        assert "mock-redis-auth" not in text or is_secret(resource.inputs.get("stringData"))


def test_no_image_is_unpinned(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    images = [i for r in run.resources for i in images_in(reveal(r.inputs))]
    assert images
    for image in images:
        assert "@sha256:" in image, image


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        found += [x for v in value.values() for x in _walk(v)]
    elif isinstance(value, list):
        found += [x for v in value for x in _walk(v)]
    return found


@pytest.mark.parametrize("stack_name", STACKS)
def test_no_load_balancer_or_node_port_service_but_the_gateways(stack_name: str) -> None:
    rendered = program_objects(stack_name)
    run = run_program(stack_name)
    for value in _walk(rendered) + _walk([reveal(r.inputs) for r in run.resources]):
        if isinstance(value, dict) and value.get("type") in ("LoadBalancer", "NodePort"):
            raise AssertionError(f"exposed: {value}")
    services = [o for o in rendered if o["kind"] == "Service"]
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services)
    assert len([o for o in rendered if o["kind"] == "Gateway"]) == 1


# -- config mistakes stop the program before any resource ---------------------------


def test_invalid_config_fails_before_any_resource() -> None:
    with pytest.raises(ConfigError) as caught:
        run_program("prod", overrides={"redis": "none", "zone": "europe-west4-a"})
    assert {issue.path for issue in caught.value.issues} == {"redis", "zone"}
    assert "allowed: memorystore, in-cluster" in str(caught.value)


def test_a_bad_value_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as caught:
        run_program("dev", overrides={"releaseChannel": "NIGHTLY"})
    (issue,) = caught.value.issues
    assert issue.path == "releaseChannel"
    assert all(channel in issue.message for channel in ("RAPID", "REGULAR", "STABLE"))


@pytest.mark.parametrize(
    ("overrides", "path", "says"),
    [
        ({"gpuType": "nvidia-v100"}, "nodePools[2].gpuType", "nvidia-l4"),
        ({"gpuType": "nvidia-tesla-a100"}, "nodePools[2].machineType", "a2-highgpu-1g"),
        (
            {"machineType": "a3-highgpu-8g", "gpuType": "nvidia-h100-80gb", "gpuCount": 3},
            "nodePools[2].gpuCount",
            "not 3",
        ),
    ],
)
def test_invalid_pools_fail_before_any_resource(
    overrides: dict[str, Any], path: str, says: str
) -> None:
    pools = [dict(p) for p in yaml.safe_load((PROJECT_ROOT / "Pulumi.dev.yaml").read_text())[
        "config"]["rayserve-gke:nodePools"]]  # fmt: skip
    pools[2].update(overrides)
    run = ProgramRun()
    with pytest.raises(ConfigError) as caught:
        run_program("dev", overrides={"nodePools": pools}, run=run)
    assert [i.path for i in caught.value.issues] == [path]
    assert says in str(caught.value)
    assert run.resources == []
