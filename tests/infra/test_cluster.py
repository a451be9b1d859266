"""The GKE cluster and its node pools: the pure builders, and the program under mocks."""

from __future__ import annotations

from typing import Any

import pytest

from infra.cluster import GPU_TAINT, NO_GKE_DEVICE_PLUGIN_LABEL, cluster_spec, node_pool_spec
from infra.config import StackConfig, gpu_catalog
from infra.config.sources import load_stack_file
from infra.program.runner import ProgramRun, shared_run
from tests.infra.helpers import STACKS

NODE_POOL = "gcp:container/nodePool:NodePool"
CLUSTER = "gcp:container/cluster:Cluster"


def _with(stack: StackConfig, **update: Any) -> StackConfig:
    return stack.model_copy(update=update)


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


# -- the program under mocks -----------------------------------------------------------


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


@pytest.mark.parametrize("stack_name", STACKS)
def test_upgrades_happen_in_the_maintenance_window_by_surge(stack_name: str) -> None:
    """Auto-upgrade stays on; it runs only in the configured window, and node pools
    surge (new nodes first) as configured, in the program's real resources."""
    run = shared_run(stack_name)
    (cluster,) = [r for r in run.resources if r.type == CLUSTER]
    window = cluster.inputs["maintenancePolicy"]["recurringWindow"]
    assert window["recurrence"] == "FREQ=WEEKLY;BYDAY=SA,SU"
    assert window["startTime"].endswith("T02:00:00Z")
    assert window["endTime"].endswith("T08:00:00Z")  # 6 h, GKE's 48 h in 32 days: 2 x 4 x 6
    for pool in [r for r in run.resources if r.type == NODE_POOL]:
        assert pool.inputs["management"]["autoUpgrade"] is True
        assert pool.inputs["upgradeSettings"] == {
            "strategy": "SURGE", "maxSurge": 1, "maxUnavailable": 0
        }  # fmt: skip


def test_maintenance_window_follows_config() -> None:
    stack = _with(
        load_stack_file("prod"),
        maintenance_days="TU,WE,TH",
        maintenance_start_utc="22:30",
        maintenance_hours=5,
    )
    window = cluster_spec("s", stack)["maintenance_policy"]["recurring_window"]
    assert window == {
        "start_time": "2026-01-03T22:30:00Z",
        "end_time": "2026-01-04T03:30:00Z",  # past midnight: the window spans two days
        "recurrence": "FREQ=WEEKLY;BYDAY=TU,WE,TH",
    }
