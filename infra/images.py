"""Layer 4: the registry and one image per service, referenced only by digest.

Images are built with pulumi-docker's `Image` (the build runs inside `pulumi up`, and
its `repo_digest` output is `repo@sha256:...`). pulumi-docker-build would add BuildKit
caching and multi-platform builds; one amd64 image per service needs neither, and
pulumi-docker ignores changes to the registry password in its diff, so the short-lived
access token from the GCP provider causes no update on every run.

An unchanged source tree gives no diff: the build context is the project root filtered
by `.dockerignore` to the few paths images use, every input path is relative, and the
image tag is a digest of exactly those files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from infra.config import PROJECT_ROOT, StackConfig

# What an image build may read; `.dockerignore` admits exactly these (a test checks).
BUILD_CONTEXT = ("pyproject.toml", "requirements.lock", "serve_apps", "images")
_SKIPPED_PARTS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
PLATFORM = "linux/amd64"


def context_files(root: Path = PROJECT_ROOT) -> list[Path]:
    """The files a build sends, relative to the root, in a stable order."""
    files: list[Path] = []
    for entry in BUILD_CONTEXT:
        path = root / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [
            p.relative_to(root)
            for p in candidates
            if p.is_file()
            and not _SKIPPED_PARTS & set(p.relative_to(root).parts)
            and p.suffix not in _SKIPPED_SUFFIXES
        ]
    return sorted(files, key=lambda p: p.as_posix())


def source_digest(root: Path = PROJECT_ROOT) -> str:
    """SHA-256 over every context file's path, executable bit and content."""
    digest = hashlib.sha256()
    for rel in context_files(root):
        path = root / rel
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        digest.update(f"{rel.as_posix()}\0{executable}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
    """Service name -> `repo@sha256:<digest>`."""

    def __init__(
        self, name: str, args: ServiceImagesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:images:ServiceImages", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tag = source_digest(args.project_root)[:16]
        registry = (
            docker.RegistryArgs(
                server=args.login.server,
                username=args.login.username,
                password=pulumi.Output.secret(args.login.password),
            )
            if args.login
            else None
        )
        by_folder: dict[str, pulumi.Output[str]] = {}
        for folder in sorted({service.image_dir for service in args.stack.services}):
            image = docker.Image(
                f"{name}-{folder}",
                image_name=pulumi.Output.concat(args.repository, "/", folder, ":", tag),
                build=docker.DockerBuildArgs(
                    # Relative paths: the program runs in the project root, and absolute
                    # ones would differ between a laptop and CI.
                    context=".",
                    dockerfile=f"images/{folder}/Dockerfile",
                    platform=PLATFORM,
                ),
                registry=registry,
                opts=child,
            )
            by_folder[folder] = image.repo_digest
        self.refs = {s.name: by_folder[s.image_dir] for s in args.stack.services}
        self.register_outputs({"refs": self.refs})
