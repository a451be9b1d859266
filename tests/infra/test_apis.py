"""Every Google resource the program declares is served by an API the program enables
first, and no API is turned off on destroy."""

from __future__ import annotations

import pytest

from infra.apis import api_of, required_apis
from infra.config.sources import load_stack_file
from infra.program.runner import shared_run
from tests.infra.helpers import STACKS

SERVICE_TYPE = "gcp:projects/service:Service"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("mode", ["preview", "update"])
def test_every_google_resource_waits_for_its_enabled_api(stack: str, mode: str) -> None:
    run = shared_run(stack, mode)
    services = [r for r in run.resources if r.type == SERVICE_TYPE]
    enabled = {r.inputs["service"] for r in services}
    assert enabled == set(required_apis(load_stack_file(stack)))
    assert all(r.inputs["disableOnDestroy"] is False for r in services)
    service_urns = {r.urn for r in services}
    google = [r for r in run.resources if r.type.startswith("gcp:") and r.type != SERVICE_TYPE]
    assert google
    for resource in google:
        assert api_of(resource.type) in enabled, resource.type
        assert service_urns <= set(resource.dependencies), resource.name


def test_no_google_api_outside_gke_mode() -> None:
    stack = load_stack_file("dev").model_copy(update={"cluster_mode": "existing"})
    assert required_apis(stack) == []


def test_memorystore_brings_the_redis_api() -> None:
    assert "redis.googleapis.com" in required_apis(load_stack_file("prod"))
    assert "redis.googleapis.com" not in required_apis(load_stack_file("dev"))
