"""`make render`: every object the program declares, valid against the pinned schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config.sources import load_stack_file
from infra.gpu_operator import resource_quota_manifest
from infra.program.render import KNOWN_AFTER_UP, charts_of, is_object, program_objects, render
from infra.program.runner import reveal, run_program
from infra.redis import in_cluster_manifests
from tests.infra.helpers import STACKS, images_in
from tests.k8s_schemas import REFERENCE_DIR, has_schema, validation_errors


@pytest.mark.parametrize("stack_name", STACKS)
@pytest.mark.parametrize("driver", ["gke", "operator"])
def test_every_object_of_every_stack_validates(stack_name: str, driver: str) -> None:
    objects = program_objects(stack_name, {"gpuDriver": driver})
    assert {o["kind"] for o in objects} >= {"Namespace", "Secret", "RayService"}
    for obj in filter(has_schema, objects):
        assert validation_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"


def _cluster(rs: dict[str, Any]) -> dict[str, Any]:
    return dict(rs["spec"]["rayClusterConfig"])


BREAKAGES = [
    (lambda rs: rs["spec"].update(upgradeStrategy={"clusterUpgradeOptions": {}}), "Options"),
    (lambda rs: _cluster(rs)["authOptions"].update(mode="password"), "mode"),
    (lambda rs: _cluster(rs)["headGroupSpec"].pop("template"), "template"),
    (lambda rs: _cluster(rs)["workerGroupSpecs"][0].update(replicas="two"), "replicas"),
]


@pytest.mark.parametrize(("breakage", "where"), BREAKAGES)
def test_a_broken_rayservice_fails_validation(breakage: Any, where: str) -> None:
    broken = copy.deepcopy(next(o for o in program_objects("prod") if o["kind"] == "RayService"))
    breakage(broken)
    errors = validation_errors(broken)
    assert errors and any(where in e for e in errors), errors


def test_a_broken_core_object_fails_validation() -> None:
    statefulset = copy.deepcopy(in_cluster_manifests(load_stack_file("dev"), "serving")[1])
    statefulset["spec"]["replicas"] = "one"
    assert validation_errors(statefulset)
    quota = resource_quota_manifest()
    quota["spec"]["scopeSelector"]["matchExpressions"][0]["operatr"] = "In"
    assert validation_errors(quota)


def test_reference_dir_is_where_the_schemas_are() -> None:
    assert (REFERENCE_DIR / "kuberay-1.7.0" / "crds" / "ray.io_rayservices.yaml").is_file()


@pytest.mark.parametrize("stack_name", STACKS)
def test_render_writes_exactly_what_the_program_declares(stack_name: str, tmp_path: Path) -> None:
    """`make render`: one valid file per Kubernetes object the program declares, one per
    chart, nothing else; never a secret value, never an invented digest."""
    run = run_program(stack_name, mode="preview")
    written = render(stack_name, tmp_path, run=run)
    objects = [yaml.safe_load(p.read_text()) for p in written if p.parent.name != "helm"]

    def identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        meta = obj["metadata"]
        return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])

    declared = [r for r in run.resources if is_object(r)]
    assert len(declared) >= 30
    assert sorted(map(identity, objects)) == sorted(identity(reveal(r.inputs)) for r in declared)
    for obj in objects:
        assert not has_schema(obj) or validation_errors(obj) == [], identity(obj)
        for image in images_in(obj):
            assert image == KNOWN_AFTER_UP or "@sha256:" in image, image
        if obj["kind"] == "Secret":
            assert "data" not in obj and "stringData" not in obj  # never a value on disk
    charts = {p.stem: yaml.safe_load(p.read_text()) for p in written if p.parent.name == "helm"}
    assert sorted(charts) == sorted(c["chart"] for c in charts_of(run))
    assert charts["kuberay-operator"]["version"] == "1.7.0"
    assert charts["gpu-operator"]["version"] == "v26.7.0"
    assert charts["kube-prometheus-stack"]["version"] == "88.5.3"
