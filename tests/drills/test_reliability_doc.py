"""docs/reliability.md is a real run's output and the decisions cite it correctly: its
tables are what `make drills` renders from docs/reliability.json, the README's table is
the same, prod's default data plane follows the rule of issue 17 on those figures, and
the generated HAProxy settings scale up at least as fast as the proxy in that run."""

from __future__ import annotations

from statistics import mean

import pytest

from drills import report
from drills.scenarios import STEP_AUTOSCALING, DrillResult, StepResult
from infra.config.sources import load_stack_file
from infra.constants import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "reliability.md"
FIRST_REPLICA_BOUND_S = 40
ALL_REPLICAS_BOUND_S = 60


@pytest.fixture(scope="module")
def run() -> tuple[list[DrillResult], list[StepResult]]:
    results, steps, _ = report.from_json(DOC.with_suffix(".json"))
    return results, steps


def test_the_doc_tables_are_the_runs(run: tuple[list[DrillResult], list[StepResult]]) -> None:
    results, steps = run
    doc = DOC.read_text(encoding="utf-8")
    drills = list(dict.fromkeys(r.drill for r in results))
    for line in [*report.drill_table(results, drills), *report.step_table(steps)]:
        assert line in doc, line
    assert {r.mode for r in results} == set(report.MODES)  # both modes ran every drill
    assert all(len([r for r in results if r.drill == d]) == 2 for d in drills)


def test_the_readme_quotes_the_run(run: tuple[list[DrillResult], list[StepResult]]) -> None:
    results, _ = run
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    drills = list(dict.fromkeys(r.drill for r in results))
    for line in report.drill_table(results, drills):
        assert line in readme, line


def test_prod_defaults_to_haproxy_only_if_it_failed_no_more_than_the_proxy(
    run: tuple[list[DrillResult], list[StepResult]],
) -> None:
    results, _ = run
    failed = {(r.drill, r.mode): r.outcome.failed for r in results}
    drills = {r.drill for r in results}
    haproxy_earned_it = all(failed[(d, "haproxy")] <= failed[(d, "proxy")] for d in drills)
    prod = load_stack_file("prod")
    assert prod.production
    # Pulumi.prod.yaml leaves serveIngress to its default, `auto`.
    assert prod.serve_ingress == ("haproxy" if haproxy_earned_it else "proxy")


def test_haproxy_as_generated_scales_up_at_least_as_fast_as_the_proxy(
    run: tuple[list[DrillResult], list[StepResult]],
) -> None:
    _, steps = run
    generated = [s for s in steps if s.mode == "haproxy" and s.variant == "generated"]
    proxy = [s for s in steps if s.mode == "proxy"]
    assert generated and proxy
    for s in generated:
        assert s.aggregation == "max"
        # The bound docs/reliability.md justifies: a push (10 s), a sample (6 s), the
        # upscale delay (5 s) and replica starts, with slack for two loaded cores.
        assert s.first_replica_s is not None and s.first_replica_s <= FIRST_REPLICA_BOUND_S
        assert s.all_replicas_s is not None and s.all_replicas_s <= ALL_REPLICAS_BOUND_S
        assert s.targets[:2] == [1, STEP_AUTOSCALING.max_replicas], s  # in one decision
    reached = [s.all_replicas_s for s in proxy if s.all_replicas_s is not None]
    assert mean(s.all_replicas_s or 0 for s in generated) <= mean(reached)
