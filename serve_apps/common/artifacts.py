"""Where model artifacts live: baked into the image, or cached on a laptop."""

import argparse
import os
from pathlib import Path

MODEL_DIR_ENV = "RAYSERVE_MODEL_DIR"

# Modules an app package may have that build its artifact into the model dir: each runs
# as `python -m serve_apps.<app>.<module> [--if-missing] [--model-dir DIR]`, in every
# image that serves the app (a Dockerfile `RUN`) and on `make run` (`--if-missing`).
ARTIFACT_BUILDERS = ("train", "export_onnx")


def model_dir() -> Path:
    """`$RAYSERVE_MODEL_DIR` (set by images and by `make run`), else a user cache."""
    configured = os.environ.get(MODEL_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "rayserve-gke" / "models"


def builder_args(description: str | None, argv: list[str] | None) -> argparse.Namespace:
    """The command line every artifact builder takes: `--model-dir`, `--if-missing`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model-dir", type=Path, default=None, help=f"default: ${MODEL_DIR_ENV}")
    parser.add_argument("--if-missing", action="store_true", help="keep a current artifact")
    return parser.parse_args(argv)
