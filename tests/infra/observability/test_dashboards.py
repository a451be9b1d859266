"""Grafana dashboards: JSON on the stack's datasource, reading metrics that exist."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.config.sources import load_stack_file
from infra.observability.dashboards import (
    DATASOURCE,
    all_dashboards,
    gpu_dashboard,
    overview_dashboard,
)
from tests.known_metrics import KNOWN, metric_names

# Ray's own dashboards also read its autoscaler's metrics (the head's `as-metrics` port).
RAY_PREFIXES = ("ray_", "autoscaler_")


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard.get("panels", []) for t in p.get("targets", [])]


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_dashboards_are_json_on_the_stack_datasource_with_known_metrics(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    dashboards = {name: json.loads(text) for name, text in all_dashboards(stack).items()}
    assert {"ray-default", "ray-serve", "ray-serve-deployment", "rayserve-overview"} <= set(
        dashboards
    )
    assert ("rayserve-gpu" in dashboards) is any(p.gpu_type for p in stack.node_pools)
    for name, dashboard in dashboards.items():
        assert dashboard["panels"], name
        for panel in dashboard["panels"]:
            datasource = panel.get("datasource")
            if name.startswith("ray-"):
                # Ray's panels use the `datasource` variable, of type prometheus.
                variables = {v["name"]: v for v in dashboard["templating"]["list"]}
                assert variables["datasource"]["query"] == "prometheus"
            elif panel.get("targets"):
                assert datasource == DATASOURCE, (name, panel["title"])
        for expr in _exprs(dashboard):
            names = metric_names(expr)
            if name.startswith("ray-"):
                assert all(n.startswith(RAY_PREFIXES) or n in KNOWN for n in names), expr
            else:
                assert names and names <= KNOWN, (name, expr, names - KNOWN)


def test_metric_name_extraction_bites() -> None:
    assert metric_names('sum by (application) (rate(foo_total{a="b"}[5m])) / up') == {
        "foo_total",
        "up",
    }
    assert not metric_names("sum by (application) (rate(made_up_metric[5m]))") <= KNOWN


def test_overview_and_gpu_dashboards_cover_what_the_issue_asks() -> None:
    overview = {p["title"] for p in overview_dashboard(load_stack_file("dev"))["panels"]}
    for wanted in ("Requests/s", "5xx ratio", "p50 / p99", "replicas", "Queued", "Rejected",
                   "RayService ready", "head up", "utilisation vs allocation"):  # fmt: skip
        assert any(wanted in title for title in overview), wanted
    gpu = {p["title"] for p in gpu_dashboard()["panels"]}
    assert {"GPU utilisation per node", "GPU utilisation per Ray worker pod",
            "GPU memory used per node", "GPU memory used per Ray worker pod"} <= gpu  # fmt: skip
