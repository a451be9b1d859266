"""The RayService component: what it waits for before its custom resource is sent."""

from __future__ import annotations

from infra.config.sources import load_stack_file
from infra.program.runner import ProgramRun

RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def _deps_closure(run: ProgramRun, key: tuple[str, str]) -> set[tuple[str, str]]:
    """What a resource waits for: its depends_on, and its ancestors' depends_on."""
    deps: set[tuple[str, str]] = set(run.depends_on.get(key, []))
    parent = run.parents.get(key)
    while parent is not None:
        deps |= set(run.depends_on.get(parent, []))
        parent = run.parents.get(parent)
    return deps


def test_rayservices_come_after_crds_operator_and_redis(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    rayservices = run.of_type(RAYSERVICE)
    assert len(rayservices) == len(load_stack_file(stack_name).services)
    redis_kind = {"dev": "kubernetes:apps/v1:StatefulSet", "prod": "gcp:redis/instance:Instance"}
    for resource in rayservices:
        deps = {typ for typ, _ in _deps_closure(run, (resource.type, resource.name))}
        assert "kubernetes:helm.sh/v4:Chart" in deps  # the CRDs and the operator
        assert "kubernetes:core/v1:Namespace" in deps
        assert redis_kind[stack_name] in deps
        assert "kubernetes:core/v1:Secret" in deps
