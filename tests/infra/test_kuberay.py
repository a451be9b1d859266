"""The KubeRay operator's Helm values, against the pinned chart."""

from __future__ import annotations

import pytest

from infra.config.sources import load_stack_file
from infra.kuberay import kuberay_values
from tests.k8s_schemas import REFERENCE_DIR, set_keys, values_keys


@pytest.mark.parametrize("single_namespace", [False, True])
def test_kuberay_values_keys_exist_in_the_pinned_chart(single_namespace: bool) -> None:
    known = values_keys(REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml")
    stack = load_stack_file("prod").model_copy(
        update={"kuberay_single_namespace": single_namespace}
    )
    # Maps of user data (a node selector, ResourceRequirements, labels) are not chart keys.
    free = ("nodeSelector", "resources", "metrics.serviceMonitor.additionalLabels")
    for key in set_keys(kuberay_values(stack), free=free):
        assert key in known, f"kuberay-operator 1.7.0 has no values key {key}"
    values = kuberay_values(stack)
    assert values["nodeSelector"] == {"rayserve-gke/role": "system"}
    assert values.get("singleNamespaceInstall", False) is single_namespace
    if single_namespace:
        assert values["watchNamespace"] == ["ray"]


def test_a_renamed_values_key_is_caught() -> None:
    known = values_keys(REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml")
    assert "metrics.serviceMonitor.additionalLabels" in known
    assert "metrics.serviceMonitor.selector" not in known  # renamed in chart 1.7.0
