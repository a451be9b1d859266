"""Each app's declared config (serve_apps/<package>/config.py) is what its builder and
deployments really take, and it imports without any model library."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest
from ray.serve import Deployment

from infra.config.sources import load_stack_file
from serve_apps.common.app_config import AppConfig
from tests.infra.helpers import STACKS

IMPORT_PATHS = sorted(
    {app.import_path for stack in STACKS for _, app in load_stack_file(stack).all_apps()}
)
HEAVY = ("numpy", "ray", "torch", "sklearn", "onnxruntime", "starlette", "sentence_transformers")


@pytest.mark.parametrize("import_path", IMPORT_PATHS)
def test_declared_config_is_what_the_app_takes(import_path: str) -> None:
    module_name, _, builder_name = import_path.partition(":")
    app_module = importlib.import_module(module_name)
    package = module_name.rsplit(".", 1)[0]
    config: AppConfig = importlib.import_module(f"{package}.config").APP_CONFIG
    builder = getattr(app_module, builder_name)
    (parameter,) = inspect.signature(builder).parameters.values()
    assert parameter.annotation is config.args
    deployments = {
        value.name: value for value in vars(app_module).values() if isinstance(value, Deployment)
    }
    assert set(deployments) == set(config.deployments)


@pytest.mark.parametrize("import_path", IMPORT_PATHS)
def test_declared_config_imports_without_model_libraries(import_path: str) -> None:
    package = import_path.partition(":")[0].rsplit(".", 1)[0]
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in HEAVY)
    script = f"import sys; {blocked}; import {package}.config as c; print(c.APP_CONFIG.args)"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
