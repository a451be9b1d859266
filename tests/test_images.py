"""Each service's Dockerfile carries what its apps need, at the versions pyproject pins."""

import re
import tomllib

import pytest

from infra.config import PROJECT_ROOT, Service, StackConfig
from infra.config.sources import load_stack_file
from serve_apps.common.artifacts import ARTIFACT_BUILDERS

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


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
    assert base.group(1) == f"rayproject/ray:{ray_version}-py311{'-gpu' if needs_gpu else ''}"

    packages = {app.import_path.split(":")[0].split(".")[1] for _, s in users for app in s.apps}
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = dict(_pin(req) for package in packages for req in extras[package.replace("_", "-")])
    # The HAProxy data plane (serveIngress: haproxy), at the version pyproject pins.
    wanted |= dict(_pin(r) for r in PYPROJECT["project"]["dependencies"] if "haproxy" in r)
    install = re.search(r"^RUN pip install --no-cache-dir (.+)$", dockerfile, re.MULTILINE)
    assert install is not None
    assert dict(map(_pin, install.group(1).split())) == wanted

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
