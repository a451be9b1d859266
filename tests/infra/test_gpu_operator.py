"""The NVIDIA GPU Operator: Helm values per driver mode, and its namespace's quota."""

from __future__ import annotations

import pytest

from infra.config.sources import load_stack_file
from infra.gpu_operator import gpu_operator_values, resource_quota_manifest
from tests.k8s_schemas import REFERENCE_DIR, set_keys, values_keys


@pytest.mark.parametrize("driver", ["gke", "operator"])
def test_gpu_operator_values_match_the_driver_mode(driver: str) -> None:
    stack = load_stack_file("prod").model_copy(update={"gpu_driver": driver})
    values = gpu_operator_values(stack)
    known = values_keys(REFERENCE_DIR / "gpu-operator-26.7.0" / "values.yaml")
    free = ("operator.nodeSelector", "dcgmExporter.resources", "dcgmExporter.env")
    for key in set_keys(values, free=free):
        assert key in known, f"gpu-operator v26.7.0 has no values key {key}"
    installs = driver == "operator"
    assert values["driver"]["enabled"] is installs
    assert values["toolkit"]["enabled"] is installs
    assert values["devicePlugin"]["enabled"] is installs
    assert values["dcgmExporter"]["enabled"] is True
    assert ("hostPaths" in values) is (driver == "gke")


def test_gpu_operator_quota_admits_critical_pods_only() -> None:
    quota = resource_quota_manifest()
    assert quota["metadata"]["namespace"] == "gpu-operator"
    assert quota["spec"]["hard"] == {"pods": "100"}
    (expression,) = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert expression["scopeName"] == "PriorityClass"
    assert set(expression["values"]) == {"system-node-critical", "system-cluster-critical"}


def test_dcgm_exporter_has_room_above_its_measured_working_set() -> None:
    """400-500 MiB measured; OOM-killed at a 512Mi limit on 8-GPU nodes."""
    exporter = gpu_operator_values(load_stack_file("prod"))["dcgmExporter"]
    assert exporter["resources"]["limits"]["memory"] == "1Gi"
    assert exporter["resources"]["requests"]["cpu"]
    env = {e["name"]: e["value"] for e in exporter["env"]}
    go_limit_mib = int(env["GOMEMLIMIT"].removesuffix("MiB"))
    assert 512 < go_limit_mib < 1024  # the GC runs before the container's limit is hit
