"""Model artifacts a laptop builds on first run (images bake them in at build time)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from infra.config import PROJECT_ROOT, StackConfig

LOCAL_MODEL_DIR = PROJECT_ROOT / ".cache" / "models"


def prepare_artifacts(
    stack: StackConfig, model_dir: Path = LOCAL_MODEL_DIR, say: Callable[[str], None] = print
) -> None:
    """Run `<app package>.train --if-missing` for every app package that has one."""
    packages = sorted(
        {app.import_path.split(":")[0].rsplit(".", 1)[0] for _, app in stack.all_apps()}
    )
    for package in packages:
        if importlib.util.find_spec(f"{package}.train") is None:
            continue
        say(f"==> {package}: model artifact")
        subprocess.run(
            [
                sys.executable,
                "-m",
                f"{package}.train",
                "--if-missing",
                "--model-dir",
                str(model_dir),
            ],
            check=True,
            cwd=PROJECT_ROOT,
        )
