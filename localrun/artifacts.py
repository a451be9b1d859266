"""Model artifacts a laptop builds on first run (images bake them in at build time)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from infra.config import PROJECT_ROOT, StackConfig
from serve_apps.common.artifacts import ARTIFACT_BUILDERS

LOCAL_MODEL_DIR = PROJECT_ROOT / ".cache" / "models"


def artifact_builders(stack: StackConfig) -> list[str]:
    """`<app package>.<builder>` for every builder module the stack's app packages have."""
    packages = sorted(
        {app.import_path.split(":")[0].rsplit(".", 1)[0] for _, app in stack.all_apps()}
    )
    return [
        f"{package}.{builder}"
        for package in packages
        for builder in ARTIFACT_BUILDERS
        if importlib.util.find_spec(f"{package}.{builder}") is not None
    ]


def prepare_artifacts(
    stack: StackConfig, model_dir: Path = LOCAL_MODEL_DIR, say: Callable[[str], None] = print
) -> None:
    """Run `<builder module> --if-missing` for every artifact builder of the stack's apps."""
    for module in artifact_builders(stack):
        say(f"==> model artifact: {module}")
        subprocess.run(
            [sys.executable, "-m", module, "--if-missing", "--model-dir", str(model_dir)],
            check=True,
            cwd=PROJECT_ROOT,
        )
