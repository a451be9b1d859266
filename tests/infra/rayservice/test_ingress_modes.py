"""Serve's two data planes in the generated config, and switching prod from one to the
other through the replacement guard (README: Reliability)."""

from __future__ import annotations

import math
import re

import pytest

from infra.config import Autoscaling, Deployment, parse_stack_config
from infra.config.sources import load_stack_file
from infra.program.runner import ProgramRun, run_program, shared_run
from infra.rayservice.serve_config import direct_ingress_concurrency, stack_serve_config
from infra.rayservice.upgrades import OUTPUT_NAME, ClusterReplacementError
from tests.infra.helpers import stack_values

RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def _deployment(**autoscaling: float) -> Deployment:
    return Deployment(
        name="Classifier",
        max_ongoing_requests=16,
        max_queued_requests=128,
        autoscaling=Autoscaling(max_replicas=4, **autoscaling) if autoscaling else None,
    )


def test_behind_haproxy_one_decision_can_reach_max_replicas() -> None:
    # The autoscaler sees at most max_ongoing_requests per replica behind HAProxy: the
    # minimum replicas must be able to report target x max_replicas between them.
    dep = _deployment(min_replicas=1, target_ongoing_requests=8)
    ongoing, queued = direct_ingress_concurrency(dep)
    assert ongoing == 32 and ongoing * 1 >= 8 * 4
    assert ongoing + queued == 16 + 128  # a replica admits as many as written
    # Never below what the stack wrote, never a queue of 0 (Serve would refuse all).
    generous = _deployment(min_replicas=2, target_ongoing_requests=1)
    assert direct_ingress_concurrency(generous) == (16, 128)
    deep = _deployment(min_replicas=1, target_ongoing_requests=100)
    assert direct_ingress_concurrency(deep) == (400, 1)
    assert direct_ingress_concurrency(_deployment()) == (16, 128)  # fixed replicas


@pytest.mark.parametrize(
    ("production", "written", "resolved"),
    [
        ("true", None, "proxy"),  # the engine passes scalars as strings
        (False, "auto", "haproxy"),
        (True, "haproxy", "haproxy"),  # an explicit choice stands
        (False, "proxy", "proxy"),
    ],
)
def test_serve_ingress_auto_is_the_proxy_in_production_only(
    production: object, written: str | None, resolved: str
) -> None:
    values = stack_values("dev") | {"production": production, "redis": "in-cluster"}
    values.pop("serveIngress", None)
    if written is not None:
        values["serveIngress"] = written
    assert parse_stack_config(values).serve_ingress == resolved
    assert load_stack_file("prod").serve_ingress == "proxy"
    assert load_stack_file("dev").serve_ingress == "haproxy"


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_the_generated_pair_follows_the_ingress(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    for ingress in ("haproxy", "proxy"):
        config = stack_serve_config(stack.model_copy(update={"serve_ingress": ingress}))
        deployments = {
            (app["name"], dep["name"]): dep
            for app in config["applications"]
            for dep in app["deployments"]
        }
        for _, app in stack.all_apps():
            for dep in app.deployments:
                generated = deployments[(app.name, dep.name)]
                pair = (generated["max_ongoing_requests"], generated["max_queued_requests"])
                if ingress == "proxy" or dep.autoscaling is None:
                    assert pair == (dep.max_ongoing_requests, dep.max_queued_requests)
                    # Ray's mean behind the proxy, which counts its queue too.
                    assert "aggregation_function" not in generated.get("autoscaling_config", {})
                    continue
                # Behind HAProxy the window's peak: a step reaches the maximum in one
                # decision (docs/reliability.md), where the mean took several.
                assert generated["autoscaling_config"]["aggregation_function"] == "max"
                scale = dep.autoscaling
                assert pair[0] >= math.ceil(
                    scale.target_ongoing_requests * scale.max_replicas / scale.min_replicas
                )
                assert sum(pair) >= dep.max_ongoing_requests + dep.max_queued_requests


@pytest.mark.slow
def test_switching_prods_data_plane_ships_with_the_approvals_the_preview_prints() -> None:
    # A serveIngress change is a Ray environment change: a new Ray cluster per service,
    # which prod refuses where both clusters exceed a pool's maxNodes. The path: preview
    # with the new mode, approve each service it names (exactly that config), ship.
    stack = load_stack_file("prod")
    other = "proxy" if stack.serve_ingress == "haproxy" else "haproxy"
    previous = {OUTPUT_NAME: shared_run("prod").outputs[OUTPUT_NAME]}
    approvals: list[str] = []
    for _ in stack.services:
        overrides = {"serveIngress": other}
        if approvals:
            overrides["approveClusterReplacement"] = ",".join(approvals)
        preview = ProgramRun(previous_outputs=previous)
        try:
            run_program("prod", overrides, run=preview, mode="preview")
            break
        except ClusterReplacementError as refused:
            message = str(refused)
            assert "will start a NEW Ray cluster" in message
            assert "containers[0].env" in message  # the data plane is Ray's environment
            found = re.search(r"approveClusterReplacement=(\S+)", message)
            assert found, message
            approvals.append(found.group(1))
    assert {a.split(":")[0] for a in approvals} == {s.name for s in stack.services}

    update = run_program(
        "prod",
        {"serveIngress": other, "approveClusterReplacement": ",".join(approvals)},
        run=ProgramRun(previous_outputs=previous),
    )
    flag = "1" if other == "haproxy" else None
    for rayservice in update.of_type(RAYSERVICE):
        spec = rayservice.inputs["spec"]["rayClusterConfig"]
        env = {e["name"]: e.get("value") for e in spec["headGroupSpec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == flag

    # Without the approvals the same update is refused before any RayService is sent.
    refused_run = ProgramRun(previous_outputs=previous)
    with pytest.raises(ClusterReplacementError, match="REFUSED"):
        run_program("prod", {"serveIngress": other}, run=refused_run)
