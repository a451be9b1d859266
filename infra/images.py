"""Layer 4: the registry and one image per service, referenced only by digest.

Images are built with pulumi-docker's `Image` (the build runs inside `pulumi up`, and
its `repo_digest` output is `repo@sha256:...`). pulumi-docker-build would add BuildKit
caching and multi-platform builds; one amd64 image per service needs neither, and
pulumi-docker ignores changes to the registry password in its diff, so the short-lived
access token from the GCP provider causes no update on every run.

Each image is built from its own context, staged under `.build/images/<folder>/`: the
folder's Dockerfile, the lock file, and of `serve_apps/` only the packages its apps'
builders import (followed through their imports) plus what every Ray pod runs (the
API-key middleware, the log shipper). So a change to one app's code changes exactly
the images that carry that app: other services keep their digest and their Ray
cluster. The tag is a digest of those files, so an unchanged tree gives no diff.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from infra.config import PROJECT_ROOT, Service, StackConfig
from infra.rayservice.manifest import LOG_SHIPPER_MODULE
from infra.rayservice.serve_config import MIDDLEWARE_IMPORT_PATH

APPS_PACKAGE = "serve_apps"
# What every Ray pod runs besides its apps: Serve loads the API-key middleware into its
# HTTP servers, and the log-shipping sidecar runs from the same image.
PLATFORM_MODULES = (MIDDLEWARE_IMPORT_PATH.partition(":")[0], LOG_SHIPPER_MODULE)
# Files of the project root every image gets.
SHARED_FILES = ("requirements.lock",)
STAGING_DIR = Path(".build") / "images"
_SKIPPED_PARTS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
PLATFORM = "linux/amd64"


def _files_under(path: Path, root: Path) -> list[Path]:
    candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
    return [
        p.relative_to(root)
        for p in candidates
        if p.is_file()
        and not _SKIPPED_PARTS & set(p.relative_to(root).parts)
        and p.suffix not in _SKIPPED_SUFFIXES
    ]


def _top_level_unit(module: str, root: Path) -> Path | None:
    """`serve_apps.a.b` -> serve_apps/a (a package) or serve_apps/a.py (a module)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != APPS_PACKAGE:
        return None
    package = root / APPS_PACKAGE / parts[1]
    if package.is_dir():
        return package.relative_to(root)
    single = package.with_suffix(".py")
    return single.relative_to(root) if single.is_file() else None


def _imported_modules(path: Path) -> set[str]:
    """The absolute module names a Python file imports (at any depth of the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def app_sources(services: Iterable[Service], root: Path = PROJECT_ROOT) -> list[Path]:
    """The `serve_apps` files an image of these services needs: each app's package, the
    platform modules, and every package they import, transitively."""
    pending = [app.import_path.partition(":")[0] for s in services for app in s.apps]
    pending += PLATFORM_MODULES
    units: set[Path] = set()
    while pending:
        unit = _top_level_unit(pending.pop(), root)
        if unit is None or unit in units:
            continue
        units.add(unit)
        for source in _files_under(root / unit, root):
            if source.suffix == ".py":
                pending += _imported_modules(root / source)
    files = [Path(APPS_PACKAGE) / "__init__.py"]
    for unit in sorted(units):
        files += _files_under(root / unit, root)
    return files


def context_files(
    folder: str, services: Iterable[Service], root: Path = PROJECT_ROOT
) -> list[Path]:
    """Every file the image of `images/<folder>` is built from, relative to the root."""
    files = _files_under(root / "images" / folder, root)
    files += [Path(name) for name in SHARED_FILES]
    files += app_sources(services, root)
    return sorted(set(files), key=lambda p: p.as_posix())


def context_digest(files: Iterable[Path], root: Path = PROJECT_ROOT) -> str:
    """SHA-256 over every file's path, executable bit and content."""
    digest = hashlib.sha256()
    for rel in files:
        path = root / rel
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        digest.update(f"{rel.as_posix()}\0{executable}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def services_by_folder(stack: StackConfig) -> dict[str, list[Service]]:
    """Image folder -> the services built from it (one image per folder)."""
    folders: dict[str, list[Service]] = {}
    for service in stack.services:
        folders.setdefault(service.image_dir, []).append(service)
    return dict(sorted(folders.items()))


def source_digests(stack: StackConfig, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Service name -> the digest of its image's context: known before any build, so
    `pulumi preview` can tell which services' code changed."""
    by_folder = {
        folder: context_digest(context_files(folder, services, root), root)
        for folder, services in services_by_folder(stack).items()
    }
    return {s.name: by_folder[s.image_dir] for s in stack.services}


def stage_context(folder: str, files: Iterable[Path], root: Path = PROJECT_ROOT) -> Path:
    """Copy an image's context to `.build/images/<folder>/` (relative path returned):
    pulumi-docker hashes and sends exactly that folder."""
    staged = STAGING_DIR / folder
    target = root / staged
    shutil.rmtree(target, ignore_errors=True)
    for rel in files:
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, destination)
    return staged


def registry_host(region: str) -> str:
    return f"{region}-docker.pkg.dev"


@dataclass
class ArtifactRegistryArgs:
    stack: StackConfig
    """The validated stack config."""
    reader_service_account: pulumi.Input[str]
    """Email of the node service account that pulls images."""


class ArtifactRegistry(pulumi.ComponentResource):
    """A Docker repository for the stack's images; nodes may read it, nothing else."""

    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: ArtifactRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:images:ArtifactRegistry", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        repository = gcp.artifactregistry.Repository(
            name,
            repository_id=name,
            format="DOCKER",
            location=stack.region,
            project=stack.gcp_project,
            description=f"Serve images of the {name} stack",
            cleanup_policies=[
                {"id": "keep-recent", "action": "KEEP", "most_recent_versions": {"keep_count": 20}},
                {"id": "drop-old", "action": "DELETE", "condition": {"older_than": "2592000s"}},
            ],
            opts=child,
        )
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-node-reader",
            repository=repository.name,
            location=stack.region,
            project=stack.gcp_project,
            role="roles/artifactregistry.reader",
            member=pulumi.Output.concat("serviceAccount:", args.reader_service_account),
            opts=child,
        )
        self.url = pulumi.Output.concat(
            registry_host(stack.region), "/", stack.gcp_project, "/", repository.repository_id
        )
        self.register_outputs({"url": self.url})


@dataclass
class RegistryLogin:
    server: str
    username: str
    password: pulumi.Input[str]


@dataclass
class ServiceImagesArgs:
    stack: StackConfig
    """The validated stack config."""
    repository: pulumi.Input[str]
    """Where images are pushed, e.g. us-central1-docker.pkg.dev/<project>/<repo>."""
    login: RegistryLogin | None = None
    """Credentials for the push; None uses the local Docker credential helpers."""
    project_root: Path = PROJECT_ROOT


class ServiceImages(pulumi.ComponentResource):
    """One image per image folder the stack's services use; refs are digests only."""

    refs: dict[str, pulumi.Output[str]]
    """Service name -> `repo@sha256:<digest>` (known once the image is pushed)."""
    source_digests: dict[str, str]
    """Service name -> digest of its image's sources (known in preview)."""

    def __init__(
        self, name: str, args: ServiceImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:images:ServiceImages", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        root = args.project_root
        registry = (
            docker.RegistryArgs(
                server=args.login.server,
                username=args.login.username,
                password=pulumi.Output.secret(args.login.password),
            )
            if args.login
            else None
        )
        self.source_digests = source_digests(args.stack, root)
        by_folder: dict[str, pulumi.Output[str]] = {}
        for folder, services in services_by_folder(args.stack).items():
            files = context_files(folder, services, root)
            tag = context_digest(files, root)[:16]
            context = stage_context(folder, files, root)
            image = docker.Image(
                f"{name}-{folder}",
                image_name=pulumi.Output.concat(args.repository, "/", folder, ":", tag),
                build=docker.DockerBuildArgs(
                    # Relative paths: the program runs in the project root, and absolute
                    # ones would differ between a laptop and CI.
                    context=context.as_posix(),
                    dockerfile=(context / "images" / folder / "Dockerfile").as_posix(),
                    platform=PLATFORM,
                ),
                registry=registry,
                opts=child,
            )
            by_folder[folder] = image.repo_digest
        self.refs = {s.name: by_folder[s.image_dir] for s in args.stack.services}
        self.register_outputs({"refs": self.refs})
