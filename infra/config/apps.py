"""Is an app's `importPath` a typed builder, and do its `args`, deployment names and
`userConfig`s fit what the app declares (serve_apps/<package>/config.py)?

Answered at `pulumi preview` without importing the app module (the builder is read from
its source) or any model library (the config module imports pydantic only), so a wrong
type shows up with its key path here, not when a replica starts in the cluster.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from infra.config.errors import ConfigIssue
from infra.config.imports import import_path_issue
from infra.config.models import App
from serve_apps.common.app_config import CONFIG_ATTRIBUTE, CONFIG_MODULE, AppConfig


def _builder_issue(import_path: str) -> tuple[str | None, str | None]:
    """(problem, the builder's parameter annotation): the target must be a function of
    one parameter, annotated with the args model."""
    module_name, _, attr = import_path.partition(":")
    if module_name.rsplit(".", 1)[-1] == "__main__":
        return f"'{import_path}' is in a __main__ module (a script, not an app module)", None
    spec = importlib.util.find_spec(module_name)
    assert spec is not None and spec.origin is not None  # resolved by import_path_issue
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    node = next(
        (
            n
            for n in tree.body
            if getattr(n, "name", None) == attr
            or any(isinstance(t, ast.Name) and t.id == attr for t in getattr(n, "targets", []))
        ),
        None,
    )
    if not isinstance(node, ast.FunctionDef):
        kind = {ast.ClassDef: "a class", ast.AsyncFunctionDef: "an async function"}.get(
            type(node), "not a function (an import or a value)"
        )
        return (
            f"'{import_path}' is {kind}; allowed: a builder function "
            f"`def {attr}(args: <ArgsModel>) -> Application`",
            None,
        )
    params = [*node.args.posonlyargs, *node.args.args]
    annotation = params[0].annotation if len(params) == 1 else None
    if not isinstance(annotation, ast.Name):
        return (
            f"'{import_path}' takes {len(params)} parameter(s); allowed: a typed builder "
            f"`def {attr}(args: <ArgsModel>) -> Application` (Serve validates args into it)",
            None,
        )
    return None, annotation.id


def _app_config(module_name: str) -> AppConfig | str:
    package = module_name.rsplit(".", 1)[0]
    config_module = f"{package}.{CONFIG_MODULE}"
    try:
        module = importlib.import_module(config_module)
    except ImportError as exc:
        return (
            f"the app declares no {config_module} ({exc}); allowed: every app package has "
            f"a {CONFIG_MODULE}.py with {CONFIG_ATTRIBUTE} = AppConfig(args=..., "
            "deployments={...}) (serve_apps/common/app_config.py)"
        )
    config = getattr(module, CONFIG_ATTRIBUTE, None)
    if not isinstance(config, AppConfig):
        return f"{config_module} defines no {CONFIG_ATTRIBUTE} = AppConfig(...)"
    return config


def _model_issues(model: type[BaseModel], value: Mapping[str, Any], at: str) -> list[ConfigIssue]:
    try:
        model.model_validate(dict(value))
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            path = at + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown key; allowed keys: {', '.join(model.model_fields)}"
            issues.append(ConfigIssue(path, message))
        return issues
    return []


def app_issues(
    app: App, at: str, resolve: Callable[[str], str | None] = import_path_issue
) -> list[ConfigIssue]:
    """The builder, its args, the deployment names and their userConfigs of one app."""
    path_at = f"{at}.importPath"
    problem = resolve(app.import_path)
    if problem:
        return [ConfigIssue(path_at, problem)]
    problem, args_name = _builder_issue(app.import_path)
    if problem:
        return [ConfigIssue(path_at, problem)]
    config = _app_config(app.import_path.partition(":")[0])
    if isinstance(config, str):
        return [ConfigIssue(path_at, config)]
    if args_name != config.args.__name__:
        return [
            ConfigIssue(
                path_at,
                f"the builder's args are annotated '{args_name}' but the app declares "
                f"{config.args.__name__} ({CONFIG_ATTRIBUTE}.args); they must be the same",
            )
        ]
    issues = _model_issues(config.args, app.args, f"{at}.args")
    for k, deployment in enumerate(app.deployments):
        dat = f"{at}.deployments[{k}]"
        if deployment.name not in config.deployments:
            issues.append(
                ConfigIssue(
                    f"{dat}.name",
                    f"'{deployment.name}' is not a deployment of this app; allowed: "
                    f"{', '.join(config.deployments)}",
                )
            )
            continue
        model = config.deployments[deployment.name]
        if model is None:
            if deployment.user_config:
                issues.append(
                    ConfigIssue(f"{dat}.userConfig", "this deployment takes no userConfig")
                )
            continue
        issues += _model_issues(model, deployment.user_config, f"{dat}.userConfig")
    return issues
