"""Pulumi ESC: every secret the program reads is supplied by each stack's environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra.config import PROJECT, PROJECT_ROOT, StackConfig

STACKS = ["dev", "prod"]
SECRET_READ = re.compile(r"(?:get|require)_secret(?:_object)?\(\"([A-Za-z]+)\"\)")


def secret_keys_read() -> set[str]:
    """Every secret config key the program's code reads."""
    sources = [PROJECT_ROOT / "__main__.py", *(PROJECT_ROOT / "infra").rglob("*.py")]
    return {key for path in sources for key in SECRET_READ.findall(path.read_text())}


def environment(stack: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "esc" / f"{stack}.yaml").read_text())


def test_the_program_reads_secrets_at_all() -> None:
    assert {"apiKeyHashes", "redisPassword", "grafanaAdminPassword", "alertWebhookUrl",
            "iapOAuthClientId", "iapOAuthClientSecret"} <= secret_keys_read()  # fmt: skip


@pytest.mark.parametrize("stack", STACKS)
def test_every_secret_read_is_supplied_by_the_stacks_environment(stack: str) -> None:
    supplied = {
        key.removeprefix(f"{PROJECT}:")
        for key in environment(stack)["values"]["pulumiConfig"]
        if key.startswith(f"{PROJECT}:")
    }
    missing = secret_keys_read() - supplied
    assert not missing, f"esc/{stack}.yaml supplies no {sorted(missing)}"
    # ...and nothing supplied is plain stack config (that would be rejected as a secret).
    aliases = {field.alias for field in StackConfig.model_fields.values()}
    assert not supplied & aliases


@pytest.mark.parametrize("stack", STACKS)
def test_stack_imports_its_environment(stack: str) -> None:
    document = yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())
    assert document["environment"] == [f"{PROJECT}/{stack}"]


@pytest.mark.parametrize("stack", STACKS)
def test_environment_holds_no_secret_and_logs_in_with_oidc(stack: str) -> None:
    values = environment(stack)["values"]
    login = values["gcp"]["login"]["fn::open::gcp-login"]
    assert set(login["oidc"]) == {"workloadPoolId", "providerId", "serviceAccount"}
    assert "credentials" not in str(login) and "privateKey" not in str(login)
    access = values["gcp"]["secrets"]["fn::open::gcp-secrets"]["access"]
    for key, value in values["pulumiConfig"].items():
        if not key.startswith(f"{PROJECT}:"):
            continue
        text = str(value)
        match = re.search(r"\$\{gcp\.secrets\.(\w+)\}", text)
        assert match and match.group(1) in access, f"{key} is not read from Secret Manager"


def test_environment_files_are_the_only_esc_definitions() -> None:
    assert sorted(p.stem for p in Path(PROJECT_ROOT / "esc").glob("*.yaml")) == STACKS
