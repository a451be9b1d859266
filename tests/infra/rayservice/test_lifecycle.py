"""A code change of one app, from the pull request's preview to prod, as the engine runs it.

For each stack: `pulumi up` of v1 (its outputs kept), then one app's code changes in a
temporary copy of the project, then `pulumi preview` and `pulumi up` of v2 with v1's
outputs as the stack's previous outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.program.runner import ProgramRun, reveal, run_program
from infra.rayservice.upgrades import OUTPUT_NAME, ClusterReplacementError
from tests.infra.helpers import project_copy

# Each test runs the whole program several times over a copy of the project.
pytestmark = pytest.mark.slow

RAYSERVICE = "kubernetes:ray.io/v1:RayService"
IMAGE = "docker:index/image:Image"
CHANGED_APP_FILE = "serve_apps/tabular_classifier/app.py"


@dataclass(frozen=True)
class Case:
    stack: str
    service: str  # the service whose image carries the changed app
    refused: bool  # the stack forbids this replacement without an approval


CASES = [Case("dev", "serving", refused=False), Case("prod", "classifier", refused=True)]


def _inputs_by_urn(run: ProgramRun) -> dict[str, object]:
    return {r.urn: reveal(r.inputs) for r in run.resources}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.stack)
def test_one_apps_code_change_from_preview_to_prod(case: Case, tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    main = root / "__main__.py"
    v1 = run_program(case.stack, main=main)
    previous = {OUTPUT_NAME: v1.outputs[OUTPUT_NAME]}

    changed = root / CHANGED_APP_FILE
    changed.write_text(changed.read_text() + "\n# v2: a comment is a code change\n")

    # The preview a reviewer reads on the pull request names the one service and why.
    preview = ProgramRun(previous_outputs=previous)
    approval = None
    if case.refused:
        with pytest.raises(ClusterReplacementError) as refused:
            run_program(case.stack, run=preview, mode="preview", main=main)
        message = str(refused.value)
        found = re.search(r"approveClusterReplacement=(\S+)", message)
        assert found, message
        approval = found.group(1)
        assert approval.startswith(f"{case.service}:")
    else:
        run_program(case.stack, run=preview, mode="preview", main=main)
        (message,) = [w for w in preview.warnings if "RayService" in w]
    assert message.startswith(f"RayService '{case.service}' will start a NEW Ray cluster")
    assert "the image (its sources: sha256 " in message
    others = {s for s in v1.outputs["imageDigests"] if s != case.service}
    assert not any(f"'{other}'" in message for other in others)

    if case.refused:
        # Refused before any RayService of the service is sent, in preview and in up.
        assert not [r for r in preview.of_type(RAYSERVICE) if r.name.endswith(case.service)]
        update = ProgramRun(previous_outputs=previous)
        with pytest.raises(ClusterReplacementError):
            run_program(case.stack, run=update, main=main)
        assert not [r for r in update.of_type(RAYSERVICE) if r.name.endswith(case.service)]

    # `pulumi up` (prod: with the approval the preview printed, for this run only).
    overrides = {"approveClusterReplacement": approval} if approval else {}
    v2 = run_program(case.stack, overrides, run=ProgramRun(previous_outputs=previous), main=main)
    assert any(w.startswith(f"RayService '{case.service}'") for w in v2.warnings)

    # Only the service's image and its RayService changed; every other resource is
    # byte-identical, the other services' images and clusters included.
    before, after = _inputs_by_urn(v1), _inputs_by_urn(v2)
    assert set(before) == set(after)
    moved = {urn for urn in before if before[urn] != after[urn]}
    assert {urn.rsplit("::", 1)[-1] for urn in moved} == {
        f"rayserve-{case.stack}-{case.service}",  # the image and the RayService
    }
    assert {urn.split("::")[2].rsplit("$", 1)[-1] for urn in moved} == {IMAGE, RAYSERVICE}
    assert v2.outputs["imageDigests"][case.service] != v1.outputs["imageDigests"][case.service]
    for other in others:
        assert v2.outputs["imageDigests"][other] == v1.outputs["imageDigests"][other]


def test_a_stale_approval_does_not_approve_the_next_change(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    main = root / "__main__.py"
    v1 = run_program("prod", main=main)
    changed = root / CHANGED_APP_FILE
    changed.write_text(changed.read_text() + "\n# v2\n")
    stale = "classifier:000000000000"
    with pytest.raises(ClusterReplacementError, match="REFUSED"):
        run_program(
            "prod",
            {"approveClusterReplacement": stale},
            run=ProgramRun(previous_outputs={OUTPUT_NAME: v1.outputs[OUTPUT_NAME]}),
            main=main,
        )
