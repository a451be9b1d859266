"""Pulumi ESC: every secret the program reads is supplied by each stack's environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from infra.config import PROJECT, PROJECT_ROOT
from infra.config.secrets import SECRET_KEY_NAMES, SECRET_KEYS, secret_issues
from infra.config.sources import load_stack_file
from infra.program.runner import STAND_IN_SECRETS

STACKS = ["dev", "prod"]
SECRET_READ = re.compile(r"\bsecrets\.get\(\"([A-Za-z]+)\"\)")


def secret_keys_read() -> set[str]:
    """Every secret config key the program's code reads."""
    sources = [PROJECT_ROOT / "__main__.py", *(PROJECT_ROOT / "infra").rglob("*.py")]
    return {key for path in sources for key in SECRET_READ.findall(path.read_text())}


def environment(stack: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "esc" / f"{stack}.yaml").read_text())


def supplied_keys(stack: str) -> set[str]:
    return {
        key.removeprefix(f"{PROJECT}:")
        for key in environment(stack)["values"]["pulumiConfig"]
        if key.startswith(f"{PROJECT}:")
    }


def test_the_program_reads_every_registered_secret_and_no_other() -> None:
    assert secret_keys_read() == set(SECRET_KEY_NAMES)


@pytest.mark.parametrize("stack", STACKS)
def test_every_secret_the_stack_needs_is_supplied_and_nothing_it_refuses(stack: str) -> None:
    config = load_stack_file(stack)
    supplied = supplied_keys(stack)
    required = {spec.key for spec in SECRET_KEYS if spec.required(config)}
    assert required, "apiKeyHashes and IAP's client are needed by every stack"
    missing = required - supplied
    assert not missing, f"esc/{stack}.yaml supplies no {sorted(missing)}"
    # Supplied keys are all secret keys, and none is refused for this stack's config
    # (a well-formed stand-in for each value shows only the stack-dependent rules).
    assert supplied <= set(SECRET_KEY_NAMES)
    stand_ins = {key: STAND_IN_SECRETS.get(key, "x" * 32) for key in supplied}
    assert secret_issues(stand_ins, config) == []


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
