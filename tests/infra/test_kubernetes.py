"""Access to the cluster: the kubeconfig and the Kubernetes provider."""

from __future__ import annotations

import yaml

from infra.kubernetes import AUTH_PLUGIN, gke_kubeconfig
from infra.program.runner import (
    MOCK_CA,
    MOCK_DNS_ENDPOINT,
    MOCK_ENDPOINT,
    MOCK_TOKEN,
    ProgramRun,
    is_secret,
    reveal,
    run_program,
)


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


def test_kubeconfig_output_is_stable_and_carries_no_credential(
    program: tuple[str, ProgramRun],
) -> None:
    stack_name, run = program
    kubeconfig = run.outputs["kubeconfig"]
    # controlPlaneAccess dns (both stacks): the DNS endpoint, no pinned CA.
    assert kubeconfig == gke_kubeconfig(f"rayserve-{stack_name}", MOCK_DNS_ENDPOINT, None)
    assert MOCK_TOKEN not in kubeconfig
    assert run_program(stack_name).outputs["kubeconfig"] == kubeconfig  # byte-identical
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])  # never plaintext in state
    assert reveal(provider.inputs["kubeconfig"]) == kubeconfig


def test_the_ip_endpoint_pins_the_clusters_ca() -> None:
    overrides = {"controlPlaneAccess": "ip", "masterAuthorizedNetworks": ["203.0.113.0/24"]}
    kubeconfig = run_program("prod", overrides).outputs["kubeconfig"]
    assert kubeconfig == gke_kubeconfig("rayserve-prod", MOCK_ENDPOINT, MOCK_CA)
