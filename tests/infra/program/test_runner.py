"""The program runner behaves like the engine where a test could be fooled otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.program.runner import (
    DuplicateUrnError,
    is_secret,
    is_unknown,
    reveal,
    run_program,
    shared_run,
)
from infra.redis import derive_password

RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def _program(tmp_path: Path, body: str) -> Path:
    main = tmp_path / "__main__.py"
    main.write_text("import pulumi\nimport pulumi_random as random\n" + body, encoding="utf-8")
    return main


def test_two_resources_with_one_urn_fail_the_run(tmp_path: Path) -> None:
    main = _program(
        tmp_path,
        'random.RandomPassword("same", length=8)\nrandom.RandomPassword("same", length=8)\n',
    )
    with pytest.raises(DuplicateUrnError, match=r"::random:index/randomPassword:\w+::same"):
        run_program("dev", main=main)


def test_a_child_name_repeated_under_two_components_of_one_type_fails(tmp_path: Path) -> None:
    """URNs carry the parents' types, not their names: the engine refuses this too."""
    component = (
        "class Box(pulumi.ComponentResource):\n"
        "    def __init__(self, name, child):\n"
        '        super().__init__("test:index:Box", name)\n'
        "        random.RandomPassword(child, length=8, opts=pulumi.ResourceOptions(parent=self))\n"
    )
    clash = _program(tmp_path, component + 'Box("a", "same")\nBox("b", "same")\n')
    with pytest.raises(DuplicateUrnError, match=r"test:index:Box\$random:.*::same'"):
        run_program("dev", main=clash)
    fine = _program(tmp_path, component + 'Box("a", "a-pw")\nBox("b", "b-pw")\n')
    run = run_program("dev", main=fine)
    assert {r.parent for r in run.of_type("random:index/randomPassword:RandomPassword")} == {
        ("test:index:Box", "a"),
        ("test:index:Box", "b"),
    }


def test_secret_config_reaches_resources_as_secrets() -> None:
    run = run_program("dev", secrets={"redisPassword": "correct-horse-battery"})
    (auth,) = [s for s in run.of_type("kubernetes:core/v1:Secret") if "redis-auth" in s.name]
    assert is_secret(auth.inputs["stringData"])
    # Each service's password is derived from the ESC one (infra/redis.py), never the same.
    assert reveal(auth.inputs["stringData"]) == {
        "password": derive_password("correct-horse-battery", "serving", "default")
    }
    assert "correct-horse-battery" not in str(run.outputs)


def test_preview_leaves_what_providers_compute_unknown() -> None:
    preview, update = shared_run("prod", "preview"), shared_run("prod", "update")
    assert is_unknown(preview.outputs["imageDigests"])
    assert all("@sha256:" in ref for ref in update.outputs["imageDigests"].values())
    for rayservice in preview.of_type(RAYSERVICE):
        head = reveal(rayservice.inputs)["spec"]["rayClusterConfig"]["headGroupSpec"]
        assert is_unknown(head["template"]["spec"]["containers"][0]["image"])
    # What config alone decides is known in preview too.
    assert preview.outputs["routes"] == update.outputs["routes"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_kubernetes_object_uses_the_one_provider(stack: str) -> None:
    run = shared_run(stack)
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    on_cluster = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert len(on_cluster) >= 30
    assert {r.provider.rsplit("::", 1)[0] for r in on_cluster if r.provider} == {provider.urn}
    assert all(r.provider for r in on_cluster)


def test_dependencies_are_recorded_by_urn() -> None:
    run = shared_run("dev")
    (rayservice,) = run.of_type(RAYSERVICE)
    needed = {run.of_urn(urn).type for urn in rayservice.dependencies}
    assert {"kubernetes:helm.sh/v4:Chart", "kubernetes:core/v1:Namespace"} <= needed
