"""Where model artifacts live: baked into the image, or cached on a laptop."""

import os
from pathlib import Path

MODEL_DIR_ENV = "RAYSERVE_MODEL_DIR"


def model_dir() -> Path:
    """`$RAYSERVE_MODEL_DIR` (set by images and by `make run`), else a user cache."""
    configured = os.environ.get(MODEL_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "rayserve-gke" / "models"
