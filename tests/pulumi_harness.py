"""Run the real `__main__.py` for a stack under Pulumi's mocks, and collect what it made.

The config is handed over as the Pulumi engine does: every value a string, objects and
lists JSON-encoded, Pulumi.yaml defaults applied first.
"""

from __future__ import annotations

import base64
import hashlib
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


SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value
MOCK_ENDPOINT = "192.0.2.10"  # TEST-NET-1: never a real control plane
MOCK_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----mock-----END CERTIFICATE-----").decode()
MOCK_TOKEN = "mock-access-token"


@dataclass
class MockedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: tuple[str, str] | None = None
    """(type, name) of the parent; None at the stack root."""


def _mock_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the cloud would add to a resource's inputs, as stable fake values."""
    outputs = dict(inputs)
    if typ == "gcp:container/cluster:Cluster":
        outputs.update(endpoint=MOCK_ENDPOINT, masterAuth={"clusterCaCertificate": MOCK_CA})
    elif typ == "gcp:serviceaccount/account:Account":
        outputs["email"] = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
    elif typ == "gcp:artifactregistry/repository:Repository":
        outputs["name"] = inputs["repositoryId"]
    elif typ == "gcp:redis/instance:Instance":
        outputs.update(
            host="10.1.2.3",
            port=6378,
            authString="mock-redis-auth",
            serverCaCerts=[{"cert": "-----BEGIN CERTIFICATE-----mock-ca"}],
        )
    elif typ == "random:index/randomPassword:RandomPassword":
        outputs["result"] = (
            "mock-" + hashlib.sha256(name.encode()).hexdigest()[: int(inputs["length"])]
        )
    elif typ == "docker:index/image:Image":
        repo = inputs["imageName"].rsplit(":", 1)[0]
        digest = hashlib.sha256(inputs["imageName"].encode()).hexdigest()
        outputs["repoDigest"] = f"{repo}@sha256:{digest}"
    return outputs


@dataclass
class ProgramRun(pulumi.runtime.Mocks):
    resources: list[MockedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """Stack outputs, resolved (secrets as plain values)."""
    calls: list[str] = field(default_factory=list)
    previous_outputs: dict[str, Any] = field(default_factory=dict)
    """What a StackReference to the stack itself reads: its last update's outputs."""
    parents: dict[tuple[str, str], tuple[str, str] | None] = field(default_factory=dict)
    depends_on: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    """(type, name) -> the resources its `depends_on` names (not inherited ones)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        if args.typ == "pulumi:pulumi:StackReference":
            state = {
                "name": inputs["name"],
                "outputs": self.previous_outputs,
                "secretOutputNames": [],
            }
            self.resources.append(
                MockedResource(args.typ, args.name, inputs, self.parents.get((args.typ, args.name)))
            )
            return f"{args.name}-id", state
        self.resources.append(
            MockedResource(args.typ, args.name, inputs, self.parents.get((args.typ, args.name)))
        )
        return f"{args.name}-id", _mock_outputs(args.typ, args.name, inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": MOCK_TOKEN, "project": "mock", "region": "", "zone": ""}, []
        return {}, []

    def record_parent(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        parent = args.opts.parent if args.opts else None
        deps: Any = args.opts.depends_on if args.opts and args.opts.depends_on else []
        self.depends_on[(args.type_, args.name)] = [
            (d._type, d._name)
            for d in (deps if isinstance(deps, list) else [deps])
            if isinstance(d, pulumi.Resource)
        ]
        self.parents[(args.type_, args.name)] = (
            (parent._type, parent._name) if parent is not None and not _is_stack(parent) else None
        )
        return None

    def of_type(self, typ: str) -> list[MockedResource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str) -> MockedResource:
        (found,) = [r for r in self.resources if r.type == typ and r.name == name]
        return found


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def reveal(value: Any) -> Any:
    """A resource input with Pulumi's secret wrappers removed, at any depth."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def _is_stack(resource: pulumi.Resource) -> bool:
    return getattr(resource, "_type", "") == "pulumi:pulumi:Stack"


def run_program(
    stack: str,
    overrides: dict[str, Any] | None = None,
    *,
    run: ProgramRun | None = None,
    main: Path = PROJECT_ROOT / "__main__.py",
) -> ProgramRun:
    """Execute the program for `stack`; exceptions from it propagate to the caller."""
    run = run if run is not None else ProgramRun()
    pulumi.runtime.set_mocks(run, project=PROJECT, stack=stack, preview=False)
    pulumi.runtime.set_all_config(engine_config(stack, overrides))
    original_export = pulumi.export
    exported: dict[str, Any] = {}

    def capture(name: str, value: Any) -> None:
        exported[name] = value
        original_export(name, value)

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        pulumi.runtime.register_stack_transformation(run.record_parent)
        pulumi.export = capture
        try:
            runpy.run_path(str(main), run_name="__main__")
        finally:
            pulumi.export = original_export
        return pulumi.Output.from_input(exported).apply(run.outputs.update)

    program()
    return run


def resource_tree(run: ProgramRun) -> list[str]:
    """`type name` lines, indented under their parents, in declaration order."""
    children: dict[tuple[str, str] | None, list[MockedResource]] = {}
    for resource in run.resources:
        children.setdefault(resource.parent, []).append(resource)
    lines: list[str] = []

    def walk(parent: tuple[str, str] | None, depth: int) -> None:
        for child in children.get(parent, []):
            lines.append(f"{'    ' * depth}{child.type}  {child.name}")
            walk((child.type, child.name), depth + 1)

    walk(None, 0)
    return lines


if __name__ == "__main__":
    import sys

    print("\n".join(resource_tree(run_program(sys.argv[1] if len(sys.argv) > 1 else "dev"))))
