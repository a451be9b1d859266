"""The KubeRay operator's Helm values, against the pinned chart."""

from __future__ import annotations

import pytest
import yaml

from infra.config.sources import load_stack_file
from infra.kuberay import OPERATOR_UID, kuberay_values
from infra.pod_security import container_security_context
from tests.k8s_schemas import REFERENCE_DIR, set_keys, values_keys


@pytest.mark.parametrize("single_namespace", [False, True])
def test_kuberay_values_keys_exist_in_the_pinned_chart(single_namespace: bool) -> None:
    known = values_keys(REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml")
    stack = load_stack_file("prod").model_copy(
        update={"kuberay_single_namespace": single_namespace}
    )
    # Maps of user data (a node selector, ResourceRequirements, SecurityContexts, labels)
    # are not chart keys.
    free = (
        "nodeSelector",
        "resources",
        "podSecurityContext",
        "securityContext",
        "metrics.serviceMonitor.additionalLabels",
    )
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


def test_the_operator_runs_restricted_and_read_only() -> None:
    values = kuberay_values(load_stack_file("prod"))
    # The operator image's own user (distroless nonroot), fixed rather than inherited.
    assert values["podSecurityContext"]["runAsUser"] == OPERATOR_UID == 65532
    assert values["podSecurityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert values["securityContext"] == container_security_context()
    # The chart's own default is the same profile: stating it keeps it through upgrades.
    defaults = yaml.safe_load(
        (REFERENCE_DIR / "kuberay-1.7.0" / "kuberay-operator.values.yaml").read_text()
    )
    assert defaults["securityContext"].items() <= values["securityContext"].items()
    assert values["resources"]["requests"]["cpu"]
    assert values["resources"]["limits"]["memory"]
