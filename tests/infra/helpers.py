"""What the infra tests share: the stacks, a stack's config values, images in objects,
a copy of the project to change."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from infra.config.sources import declared_config, stack_file_values
from infra.constants import PROJECT_ROOT

STACKS = ("dev", "prod")


def stack_values(stack: str) -> dict[str, Any]:
    """What `load_stack_file` validates: Pulumi.yaml defaults overlaid with the stack
    file (camelCase keys), a fresh copy to change."""
    defaults = {
        key: decl["default"]
        for key, decl in declared_config().items()
        if isinstance(decl, dict) and "default" in decl
    }
    return copy.deepcopy({**defaults, **stack_file_values(stack)})


def images_in(value: Any) -> list[str]:
    """Every `image` string anywhere in a resource's inputs or an object."""
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k == "image" and isinstance(v, str)]
        return found + [i for v in value.values() for i in images_in(v)]
    if isinstance(value, list):
        return [i for v in value for i in images_in(v)]
    return []


def project_copy(tmp_path: Path) -> Path:
    """What the program reads of the project, copied to change it: `run_program(...,
    main=<copy>/__main__.py)` then builds images from the copy's sources."""
    root = tmp_path / "project"
    for folder in ("serve_apps", "images"):
        shutil.copytree(PROJECT_ROOT / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    stack_files = [p.name for p in PROJECT_ROOT.glob("Pulumi.*.yaml")]
    for name in ("__main__.py", "Pulumi.yaml", *stack_files, "requirements.lock"):
        shutil.copy2(PROJECT_ROOT / name, root / name)
    return root
