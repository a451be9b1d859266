"""Run the real `__main__.py` for a stack under Pulumi's mocks, and collect what it made.

The config is handed over as the Pulumi engine does: every value a string, objects and
lists JSON-encoded, Pulumi.yaml defaults applied first.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from infra.config import PROJECT, PROJECT_ROOT
from infra.config_sources import declared_config, stack_file_values


def engine_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def engine_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """`rayserve-gke:<key>` -> string, as `pulumi up -s <stack>` passes config."""
    values = {
        key: decl["default"]
        for key, decl in declared_config().items()
        if isinstance(decl, dict) and "default" in decl
    }
    values.update(stack_file_values(stack))
    values.update(overrides or {})
    return {f"{PROJECT}:{key}": engine_value(value) for key, value in values.items()}


@dataclass
class MockedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str | None = None


@dataclass
class ProgramRun(pulumi.runtime.Mocks):
    resources: list[MockedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(MockedResource(args.typ, args.name, dict(args.inputs)))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        return {}, []


def run_program(
    stack: str, overrides: dict[str, Any] | None = None, main: Path = PROJECT_ROOT / "__main__.py"
) -> ProgramRun:
    """Execute the program for `stack`; exceptions from it propagate to the caller."""
    run = ProgramRun()
    pulumi.runtime.set_mocks(run, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(engine_config(stack, overrides))
    original_export = pulumi.export

    def capture(name: str, value: Any) -> None:
        run.outputs[name] = value
        original_export(name, value)

    @pulumi.runtime.test
    def program() -> None:
        pulumi.export = capture
        try:
            runpy.run_path(str(main), run_name="__main__")
        finally:
            pulumi.export = original_export

    program()
    return run
