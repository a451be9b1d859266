"""Does a Serve app's `importPath` resolve? Answered without importing the app module, so
the Pulumi program needs no model libraries to check a builder."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path


def import_path_issue(import_path: str) -> str | None:
    """Why an import path does not resolve, without importing the app module.

    Only the module's parent packages are imported (they are empty); the module itself
    is parsed, so the Pulumi program needs no model libraries to check a builder.
    """
    module_name, _, attr = import_path.partition(":")
    problem = _parent_package_issue(module_name)
    if problem:
        return f"'{import_path}' does not resolve: {problem}"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        return f"'{import_path}' does not resolve: {exc}"
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return f"'{import_path}' does not resolve: no module '{module_name}'"
    try:
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        return f"'{import_path}' does not resolve: {module_name} cannot be read ({exc})"
    if attr not in _top_level_names(tree):
        return f"'{import_path}' does not resolve: {module_name} defines no '{attr}'"
    return None


def _parent_package_issue(module_name: str) -> str | None:
    """find_spec imports every parent, so each must be a package, never a module."""
    parts = module_name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(parent)
        except (ImportError, ValueError) as exc:
            return str(exc)
        if spec is None:
            return f"no module '{parent}'"
        if spec.submodule_search_locations is None:
            return f"'{parent}' is a module, not a package"
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names
