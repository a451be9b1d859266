"""Before KubeRay replaces a Ray cluster, the operator is told; prod refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.images import source_digests
from infra.program.runner import ProgramRun, run_program, shared_run
from infra.rayservice.upgrades import (
    OUTPUT_NAME,
    ClusterReplacementError,
    changed_paths,
    classify,
    fingerprint,
    image_of_sources,
    verdict,
)

RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def test_changed_paths() -> None:
    old = {"a": {"b": [1, {"c": 2}]}, "d": 1}
    assert changed_paths(old, copy.deepcopy(old)) == []
    new = {"a": {"b": [1, {"c": 3}]}, "e": 1}
    assert changed_paths(old, new) == ["a.b[1].c", "d", "e"]
    assert changed_paths({"l": [1]}, {"l": [1, 2]}) == ["l"]


def _known(stack_name: str) -> tuple[Any, dict[str, Any]]:
    """The stack and what the guard compares: each service's rayClusterConfig as known
    in preview (the program's own export)."""
    run = shared_run(stack_name)
    return load_stack_file(stack_name), copy.deepcopy(run.outputs[OUTPUT_NAME])


def _workers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(config["workerGroupSpecs"])


def test_the_guard_sees_the_image_as_its_sources_digest_even_in_preview() -> None:
    preview = shared_run("prod", "preview")
    stack, known = _known("prod")
    assert preview.outputs[OUTPUT_NAME] == known  # nothing unknown in preview
    digests = source_digests(stack)
    for name, config in known.items():
        head = config["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["image"] == image_of_sources(digests[name])


def test_classify_as_kuberay_1_7_does() -> None:
    _, known = _known("prod")
    before = known["embeddings"]
    assert classify(before, copy.deepcopy(before)) is None

    bounds = copy.deepcopy(before)
    _workers(bounds)[0]["maxReplicas"] += 2
    _workers(bounds)[0]["minReplicas"] = 1
    change = classify(before, bounds)
    assert change is not None and change.kind == "deferred"

    appended = copy.deepcopy(before)
    appended["workerGroupSpecs"].append(copy.deepcopy(_workers(before)[0]) | {"groupName": "x"})
    change = classify(before, appended)
    assert change is not None and change.kind == "in_place"

    for edit in (
        lambda c: c["headGroupSpec"]["template"]["spec"]["containers"][0].update(image="x"),
        lambda c: _workers(c)[0]["template"]["spec"]["containers"][0]["resources"].update(
            limits={"cpu": "1"}
        ),
        lambda c: c["workerGroupSpecs"].pop(),  # a group removed
        lambda c: c.update(rayVersion="9.9.9"),
    ):
        after = copy.deepcopy(before)
        edit(after)
        change = classify(before, after)
        assert change is not None and change.kind == "new_cluster"


def test_a_new_cluster_names_service_reason_and_peak_nodes() -> None:
    stack, before = _known("prod")
    after = copy.deepcopy(before)
    for container in after["embeddings"]["headGroupSpec"]["template"]["spec"]["containers"]:
        container["image"] = image_of_sources("f" * 64)
    service = stack.services[0]
    result = verdict(stack, service, before["embeddings"], after["embeddings"])
    assert not result.allowed and result.message is not None
    assert result.message.startswith(
        "RayService 'embeddings' will start a NEW Ray cluster (upgradeStrategy NewCluster) "
        "because rayClusterConfig changed: the image (its sources: sha256 "
    )
    # l4: 4 workers, one per g2-standard-24 node: 4 + 4 = 8 > maxNodes 4.
    assert (
        "pool 'l4': up to 4 more node(s) for the new cluster while the old one holds up to 4: 8 of maxNodes 4 (EXCEEDS"
        in result.message
    )
    assert "pool 'h100': up to 2 more node(s)" in result.message
    approval = f"embeddings:{fingerprint(after['embeddings'])}"
    assert f"approveClusterReplacement={approval}" in result.message
    approved = stack.model_copy(update={"approve_cluster_replacement": approval})
    assert verdict(approved, service, before["embeddings"], after["embeddings"]).allowed
    # Dev (failOnClusterReplacement false) warns and goes ahead.
    relaxed = stack.model_copy(update={"fail_on_cluster_replacement": False})
    assert verdict(relaxed, service, before["embeddings"], after["embeddings"]).allowed


def test_a_new_cluster_that_fits_is_allowed_in_prod() -> None:
    stack, before = _known("prod")
    pools = [p.model_copy(update={"max_nodes": 20}) for p in stack.node_pools]
    roomy = stack.model_copy(update={"node_pools": pools})
    after = copy.deepcopy(before["classifier"])
    _workers(after)[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = (
        "30Gi"
    )
    result = verdict(roomy, roomy.services[1], before["classifier"], after)
    assert result.allowed and result.message is not None and "(fits)" in result.message


def test_strategy_none_says_the_change_is_not_rolled_out() -> None:
    stack, before = _known("dev")
    service = stack.services[0]
    strategy = service.upgrade_strategy.model_copy(update={"type": "None"})
    service = service.model_copy(update={"upgrade_strategy": strategy})
    after = copy.deepcopy(before["serving"])
    after["rayVersion"] = "9.9.9"
    result = verdict(stack, service, before["serving"], after)
    assert result.allowed and result.message is not None
    assert "will NOT roll it out" in result.message


# -- the program, run twice as two `pulumi up`s --------------------------------------------


def _stack_values(stack: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def _second_run(
    stack: str, first: ProgramRun, overrides: dict[str, Any] | None = None
) -> tuple[ProgramRun, list[str]]:
    run = ProgramRun(previous_outputs={OUTPUT_NAME: first.outputs[OUTPUT_NAME]})
    run_program(stack, overrides, run=run)
    return run, [w for w in run.warnings if "RayService" in w]


def test_unchanged_and_serve_config_changes_do_not_warn() -> None:
    first = shared_run("dev")
    assert set(first.outputs[OUTPUT_NAME]) == {"serving"}
    _, warnings = _second_run("dev", first)
    assert warnings == []
    services = copy.deepcopy(_stack_values("dev")["rayserve-gke:services"])
    services[0]["apps"][1]["deployments"][0]["userConfig"]["decision_threshold"] = 0.8
    services[0]["apps"][1]["deployments"][0]["numReplicas"] = 3
    _, warnings = _second_run("dev", first, {"services": services})
    assert warnings == []  # in place: serveConfigV2 only


def test_a_worker_change_warns_in_dev() -> None:
    first = shared_run("dev")
    services = copy.deepcopy(_stack_values("dev")["rayserve-gke:services"])
    services[0]["workerGroups"][1]["memory"] = "20Gi"
    _, warnings = _second_run("dev", first, {"services": services})
    (warning,) = warnings
    assert "RayService 'serving' will start a NEW Ray cluster" in warning
    assert "workerGroupSpecs[1].template.spec.containers[0].resources" in warning


def test_a_max_replicas_change_says_it_waits_for_the_next_update() -> None:
    first = shared_run("dev")
    services = copy.deepcopy(_stack_values("dev")["rayserve-gke:services"])
    services[0]["workerGroups"][0]["maxReplicas"] += 1
    _, warnings = _second_run("dev", first, {"services": services})
    (warning,) = warnings
    assert "only worker group scaling bounds changed" in warning


def test_prod_refuses_a_cluster_that_does_not_fit_before_its_rayservice() -> None:
    first = shared_run("prod")
    services = copy.deepcopy(_stack_values("prod")["rayserve-gke:services"])
    services[1]["head"]["memory"] = "12Gi"
    run = ProgramRun(previous_outputs={OUTPUT_NAME: first.outputs[OUTPUT_NAME]})
    with pytest.raises(ClusterReplacementError, match="RayService 'classifier'"):
        run_program("prod", {"services": services}, run=run)
    assert "rayserve-prod-classifier" not in [r.name for r in run.of_type(RAYSERVICE)]
