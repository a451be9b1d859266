"""Run the real `__main__.py` for a stack under Pulumi's mocks, as the engine would.

One runner for `make tree`, `make render`, the policy pack's tests and every test that
needs the program's resources:
- config as `pulumi up -s <stack>` hands it over: Pulumi.yaml defaults, then the stack
  file, every value a string (objects and lists JSON-encoded); ESC's secret keys are
  passed as secrets;
- `update` mode resolves every output with stable fake values; `preview` mode leaves
  what a provider computes unknown, as `pulumi preview` does (image digests, cluster
  endpoint, generated passwords, Memorystore's address);
- the previous update's outputs are what a StackReference to the stack itself reads;
- every resource is kept with its URN, inputs, parent, provider and dependencies, and
  two resources with the same URN fail the run as they fail the engine.
"""

from __future__ import annotations

import base64
import functools
import gc
import hashlib
import json
import logging
import runpy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pulumi
from pulumi.output import Unknown
from pulumi.runtime.mocks import MockMonitor

from infra.config import PROJECT, PROJECT_ROOT
from infra.config.sources import declared_config, stack_file_values

Mode = Literal["update", "preview"]

SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's marker for an unknown value
MOCK_ENDPOINT = "192.0.2.10"  # TEST-NET-1: never a real control plane
MOCK_DNS_ENDPOINT = "gke-0123456789abcdef-mock.us-central1.gke.goog"
MOCK_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----mock-----END CERTIFICATE-----").decode()
MOCK_TOKEN = "mock-access-token"


def engine_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def engine_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """`rayserve-gke:<key>` -> string, as `pulumi up -s <stack>` passes config."""
    values = {
        key: decl["default"]
        for key, decl in declared_config().items()
        if isinstance(decl, dict) and "default" in decl
    }
    values.update(stack_file_values(stack))
    values.update(overrides or {})
    # A key with a namespace (`gcp:project`, a typo'd `rayserve-gk:x`) is passed as is.
    return {
        key if ":" in key else f"{PROJECT}:{key}": engine_value(value)
        for key, value in values.items()
    }


# What each stack's ESC environment supplies, as stand-ins that pass validation (the
# optional Redis password is left to be generated: prod's Memorystore makes its own).
STAND_IN_SECRETS: dict[str, Any] = {
    "apiKeyHashes": {"from-esc": "0" * 64},
    "grafanaAdminPassword": "from-esc-grafanaAdminPassword",
    "alertPagerDutyKey": "fromescalertpagerdutykey00000000",
    "alertSlackToken": "xoxb-from-esc-alertSlackToken",
    "iapOAuthClientId": "000000000000-fromesc.apps.googleusercontent.com",
    "iapOAuthClientSecret": "from-esc-iapOAuthClientSecret",
}


class DuplicateUrnError(RuntimeError):
    """Two resources with one URN: the engine refuses the whole update."""


@dataclass
class MockedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: tuple[str, str] | None = None
    """(type, name) of the parent; None at the stack root."""
    urn: str = ""
    provider: str | None = None
    """The provider reference (`urn::id`) it was created with; None for the default."""
    dependencies: list[str] = field(default_factory=list)
    """URNs it depends on: `depends_on`, inherited ones and those of its input Outputs."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, self.name)


def _mock_outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the cloud would add to a resource's inputs, as stable fake values."""
    outputs = dict(inputs)
    if typ == "gcp:container/cluster:Cluster":
        outputs.update(endpoint=MOCK_ENDPOINT, masterAuth={"clusterCaCertificate": MOCK_CA})
        endpoints = dict(inputs.get("controlPlaneEndpointsConfig") or {})
        dns = {**(endpoints.get("dnsEndpointConfig") or {}), "endpoint": MOCK_DNS_ENDPOINT}
        outputs["controlPlaneEndpointsConfig"] = {**endpoints, "dnsEndpointConfig": dns}
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
    mode: Mode = "update"
    resources: list[MockedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    """Stack outputs, resolved (secrets as plain values; unknown ones as UNKNOWN)."""
    calls: list[str] = field(default_factory=list)
    previous_outputs: dict[str, Any] = field(default_factory=dict)
    """What a StackReference to the stack itself reads: its last update's outputs."""
    depends_on: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    """(type, name) -> the resources its `depends_on` names (not inherited ones)."""
    warnings: list[str] = field(default_factory=list)
    """What the program logged with pulumi.log.warn (the engine prints them)."""
    declared: dict[tuple[str, str], int] = field(default_factory=dict)
    """(type, name) -> its place in the order the program declared resources."""
    duplicates: list[str] = field(default_factory=list)
    """URNs registered twice (the run then fails with DuplicateUrnError)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = dict(args.inputs)
        # Set by _EngineMonitor.RegisterResource on this thread, just before this call.
        urn, parent_urn, dependencies = _registering.current
        self.resources.append(
            MockedResource(
                args.typ, args.name, inputs, _type_and_name(parent_urn), urn,
                args.provider or None, dependencies,
            )
        )  # fmt: skip
        if args.typ == "pulumi:pulumi:StackReference":
            state = {
                "name": inputs["name"],
                "outputs": self.previous_outputs,
                "secretOutputNames": [],
            }
            return f"{args.name}-id", state
        if self.mode == "preview":
            # The engine knows only the inputs before a provider creates anything.
            return "", inputs
        return f"{args.name}-id", _mock_outputs(args.typ, args.name, inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[Any]]:
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": MOCK_TOKEN, "project": "mock", "region": "", "zone": ""}, []
        return {}, []

    def record_declaration(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        self.declared.setdefault((args.type_, args.name), len(self.declared))
        deps: Any = args.opts.depends_on if args.opts and args.opts.depends_on else []
        self.depends_on[(args.type_, args.name)] = [
            (d._type, d._name)
            for d in (deps if isinstance(deps, list) else [deps])
            if isinstance(d, pulumi.Resource)
        ]
        return None

    @property
    def parents(self) -> dict[tuple[str, str], tuple[str, str] | None]:
        """(type, name) -> (type, name) of its parent; None at the stack root."""
        return {r.key: r.parent for r in self.resources}

    def of_urn(self, urn: str) -> MockedResource:
        (found,) = [r for r in self.resources if r.urn == urn]
        return found

    def of_type(self, typ: str) -> list[MockedResource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, name: str) -> MockedResource:
        (found,) = [r for r in self.resources if r.type == typ and r.name == name]
        return found


# The resource being registered on this thread (the SDK registers from a thread pool).
_registering = threading.local()


def _type_and_name(urn: str | None) -> tuple[str, str] | None:
    """(type, name) of the resource a URN names; None for none or the stack."""
    if not urn:
        return None
    qualified_type, name = urn.split("::")[2:4]
    typ = qualified_type.split("$")[-1]
    return None if typ == "pulumi:pulumi:Stack" else (typ, name)


class _EngineMonitor(MockMonitor):
    """The mocks' resource monitor, made stricter where the engine is: full URNs (the
    whole parent type chain) and no two resources with one URN."""

    def __init__(self, run: ProgramRun) -> None:
        super().__init__(run)
        self.run = run
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        parent_type = parent.split("::")[2] if parent else ""
        if parent_type and parent_type != "pulumi:pulumi:Stack":  # the engine leaves it out
            type_ = parent_type + "$" + type_
        stack, project = pulumi.get_stack(), pulumi.get_project()
        return f"urn:pulumi:{stack}::{project}::{type_}::{name}"

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type != "pulumi:pulumi:Stack":
            with self.lock:
                if urn in self.seen:
                    # Raised once the program has run (raising here would leave the
                    # error in an SDK future nobody awaits).
                    self.run.duplicates.append(urn)
                self.seen.add(urn)
        _registering.current = (urn, request.parent or None, list(request.dependencies))
        return super().RegisterResource(request)

    def ReadResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        _registering.current = (urn, request.parent or None, list(request.dependencies))
        return super().ReadResource(request)


class _Warnings(logging.Handler):
    """Keeps what the program logs with pulumi.log.warn (the engine prints it)."""

    def __init__(self, run: ProgramRun) -> None:
        super().__init__(logging.WARNING)
        self.run = run

    def emit(self, record: logging.LogRecord) -> None:
        self.run.warnings.append(record.getMessage())


def _engine_logger(run: ProgramRun) -> logging.Logger:
    logger = logging.getLogger(f"{__name__}.engine")
    logger.handlers = [_Warnings(run)]
    logger.propagate = False
    return logger


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and SECRET_SIG in value


def is_unknown(value: Any) -> bool:
    """A value only a provider will know (preview mode)."""
    return isinstance(value, Unknown) or value == UNKNOWN


def reveal(value: Any) -> Any:
    """A resource input with Pulumi's secret wrappers removed, at any depth."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def run_program(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    run: ProgramRun | None = None,
    mode: Mode | None = None,
    secrets: Mapping[str, Any] | None = None,
    main: Path = PROJECT_ROOT / "__main__.py",
) -> ProgramRun:
    """Execute the program for `stack`; exceptions from it propagate to the caller.

    `secrets`: secret config (ESC's keys), passed as secrets the way the engine does,
    over `STAND_IN_SECRETS`; a None value leaves that key unset.
    """
    run = run if run is not None else ProgramRun()
    if mode is not None:
        run.mode = mode
    pulumi.runtime.set_mocks(
        run,
        project=PROJECT,
        stack=stack,
        preview=run.mode == "preview",
        monitor=_EngineMonitor(run),
        logger=_engine_logger(run),
    )
    config = engine_config(stack, overrides)
    supplied = {**STAND_IN_SECRETS, **(secrets or {})}
    secret_config = {
        f"{PROJECT}:{k}": engine_value(v) for k, v in supplied.items() if v is not None
    }
    pulumi.runtime.set_all_config({**config, **secret_config}, secret_keys=list(secret_config))
    original_export = pulumi.export
    exported: dict[str, Any] = {}

    def capture(name: str, value: Any) -> None:
        exported[name] = value
        original_export(name, value)

    @pulumi.runtime.test
    def program() -> pulumi.Output[None]:
        pulumi.runtime.register_stack_transformation(run.record_declaration)
        pulumi.export = capture
        try:
            runpy.run_path(str(main), run_name="__main__")
        finally:
            pulumi.export = original_export
        # One apply per output: in preview an unknown output must not hide the known ones.
        return pulumi.Output.all(
            *(
                pulumi.Output.from_input(value).apply(
                    functools.partial(run.outputs.__setitem__, key)
                )
                for key, value in exported.items()
            )
        ).apply(lambda _: None)

    try:
        program()
    finally:
        # A failed run leaves SDK futures whose errors nobody retrieves; collect them now,
        # at a safe point: their finalizers log, and logging from inside a later
        # allocation-heavy call (ast.parse of an import-path check) trips CPython 3.11's
        # "AST constructor recursion depth mismatch".
        gc.collect()
    # Registration runs on a thread pool: put resources back in the program's order.
    run.resources.sort(key=lambda r: run.declared.get(r.key, len(run.declared)))
    for key in exported.keys() - run.outputs.keys():
        run.outputs[key] = UNKNOWN  # what `pulumi preview` prints as "output<string>"
    if run.duplicates:
        # The engine fails the whole update on the first one.
        raise DuplicateUrnError(f"Duplicate resource URN '{run.duplicates[0]}'")
    return run


@functools.cache
def shared_run(stack: str, mode: Mode = "update") -> ProgramRun:
    """One run per stack and mode for a whole test session (or `make render`): callers
    read it and must not change it."""
    return run_program(stack, mode=mode)


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


def main(argv: list[str] | None = None) -> int:
    """`make tree STACK=...`: what the program declares, offline."""
    import argparse  # noqa: PLC0415 - only the command line needs it

    parser = argparse.ArgumentParser(
        prog="python -m infra.program.runner", description=main.__doc__
    )
    parser.add_argument("stack", nargs="?", default="dev")
    parser.add_argument("--preview", action="store_true", help="as `pulumi preview` sees it")
    args = parser.parse_args(argv)
    run = run_program(args.stack, mode="preview" if args.preview else "update")
    print("\n".join(resource_tree(run)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
