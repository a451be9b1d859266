"""The GitHub Actions workflows do what the README promises (syntax: make lint)."""

from __future__ import annotations

from typing import Any

import yaml

from infra.config import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as True
    return dict(document)


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["steps"])


def _uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in _steps(job) if str(s.get("uses", "")).startswith(action)]


def test_pull_requests_run_the_tests_then_preview_both_stacks_with_one_comment_each() -> None:
    preview = _load("preview.yml")
    assert list(preview["on"]) == ["pull_request"]
    assert preview["permissions"]["id-token"] == "write"
    assert preview["permissions"]["pull-requests"] == "write"
    assert any("bash .ci/run" in s.get("run", "") for s in _steps(preview["jobs"]["test"]))
    job = preview["jobs"]["preview"]
    assert job["needs"] == "test"
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    (pulumi,) = _uses(job, "pulumi/actions@")
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["edit-pr-comment"] is True
    assert _uses(job, "pulumi/auth-actions@")  # OIDC, no PULUMI_ACCESS_TOKEN secret


def test_main_deploys_dev_then_prod_behind_an_approval() -> None:
    deploy = _load("deploy.yml")
    assert deploy["on"] == {"push": {"branches": ["main"]}}
    assert deploy["concurrency"]["cancel-in-progress"] is False
    job = deploy["jobs"]["up"]
    assert job["needs"] == "test"
    include = job["strategy"]["matrix"]["include"]
    assert [(i["stack"], i["environment"]) for i in include] == [
        ("dev", "dev"),
        ("prod", "production"),
    ]
    assert job["strategy"]["max-parallel"] == 1
    (pulumi,) = _uses(job, "pulumi/actions@")
    assert pulumi["with"]["command"] == "up"


def test_no_long_lived_secret_is_used() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "secrets." not in text, f"{path.name} reads a stored secret"
        assert "credentials_json" not in text
