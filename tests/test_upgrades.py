"""Before KubeRay replaces a Ray cluster, the operator is told; prod refuses."""

from __future__ import annotations

import copy
from typing import Any

import pulumi
import pytest
import yaml

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.program.render import program_objects
from infra.program.runner import ProgramRun, run_program
from infra.rayservice.upgrades import ClusterReplacementError, changed_paths, replacement_reports


def test_changed_paths() -> None:
    old = {"a": {"b": [1, {"c": 2}]}, "d": 1}
    assert changed_paths(old, copy.deepcopy(old)) == []
    new = {"a": {"b": [1, {"c": 3}]}, "e": 1}
    assert changed_paths(old, new) == ["a.b[1].c", "d", "e"]
    assert changed_paths({"l": [1]}, {"l": [1, 2]}) == ["l"]


def _clusters(stack_name: str) -> tuple[Any, dict[str, Any]]:
    return load_stack_file(stack_name), {
        o["metadata"]["name"]: copy.deepcopy(o["spec"]["rayClusterConfig"])
        for o in program_objects(stack_name)
        if o["kind"] == "RayService"
    }


def test_first_deploy_and_unchanged_clusters_report_nothing() -> None:
    stack, clusters = _clusters("prod")
    assert replacement_reports(stack, None, clusters) == []
    assert replacement_reports(stack, copy.deepcopy(clusters), clusters) == []


def test_a_cluster_change_names_service_fields_and_peak_nodes() -> None:
    stack, before = _clusters("prod")
    after = copy.deepcopy(before)
    head = after["embeddings"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["image"] = head["image"].replace(":", ":new-", 1)
    (report,) = replacement_reports(stack, before, after)
    assert report.startswith(
        "RayService 'embeddings' will start a NEW Ray cluster (upgradeStrategy NewCluster)"
    )
    assert "headGroupSpec.template.spec.containers[0].image" in report
    # l4: 4 workers, one per g2-standard-24 node: 4 + 4 = 8 > maxNodes 4.
    assert (
        "pool 'l4': up to 4 more node(s) for the new cluster while the old one holds up to 4: 8 of maxNodes 4 (EXCEEDS"
        in report
    )
    assert "pool 'h100': up to 2 more node(s)" in report


def test_strategy_none_says_the_change_is_not_rolled_out() -> None:
    stack, before = _clusters("dev")
    service = stack.services[0]
    strategy = service.upgrade_strategy.model_copy(update={"type": "None"})
    stack = stack.model_copy(
        update={"services": [service.model_copy(update={"upgrade_strategy": strategy})]}
    )
    after = copy.deepcopy(before)
    after["serving"]["workerGroupSpecs"][0]["maxReplicas"] = 5
    (report,) = replacement_reports(stack, before, after)
    assert "will NOT roll it out" in report


# -- the program, run twice as two `pulumi up`s --------------------------------------------


def _stack_values(stack: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def _second_run(
    stack: str, first: ProgramRun, overrides: dict[str, Any] | None = None
) -> tuple[ProgramRun, list[str]]:
    warnings: list[str] = []
    original = pulumi.log.warn
    pulumi.log.warn = lambda message, *a, **k: warnings.append(message)
    try:
        run = ProgramRun(previous_outputs={"rayClusterConfigs": first.outputs["rayClusterConfigs"]})
        run_program(stack, overrides, run=run)
    finally:
        pulumi.log.warn = original
    return run, [w for w in warnings if "RayService" in w]


def test_unchanged_and_serve_config_changes_do_not_warn() -> None:
    first = run_program("dev")
    assert set(first.outputs["rayClusterConfigs"]) == {"serving"}
    _, warnings = _second_run("dev", first)
    assert warnings == []
    services = copy.deepcopy(_stack_values("dev")["rayserve-gke:services"])
    services[0]["apps"][1]["deployments"][0]["userConfig"]["decision_threshold"] = 0.8
    services[0]["apps"][1]["deployments"][0]["numReplicas"] = 3
    _, warnings = _second_run("dev", first, {"services": services})
    assert warnings == []  # in place: serveConfigV2 only


def test_a_worker_change_warns_in_dev() -> None:
    first = run_program("dev")
    services = copy.deepcopy(_stack_values("dev")["rayserve-gke:services"])
    services[0]["workerGroups"][1]["memory"] = "28Gi"
    _, warnings = _second_run("dev", first, {"services": services})
    (warning,) = warnings
    assert "RayService 'serving' will start a NEW Ray cluster" in warning
    assert "workerGroupSpecs[1].template.spec.containers[0].resources" in warning
    print(f"\n{warning}")


def test_prod_refuses_to_replace_a_cluster() -> None:
    first = run_program("prod")
    services = copy.deepcopy(_stack_values("prod")["rayserve-gke:services"])
    services[1]["head"]["memory"] = "12Gi"
    with pytest.raises(ClusterReplacementError, match="RayService 'classifier'"):
        _second_run("prod", first, {"services": services})
