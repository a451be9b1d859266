"""The real `__main__.py`, per stack, under Pulumi's mocks."""

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from infra.config import ConfigError
from infra.program.runner import run_program


@pytest.mark.parametrize("stack", ["dev", "prod"])
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
