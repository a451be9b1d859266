"""Drive the real policy pack the way the Pulumi engine does, without the engine.

Run with the policy pack's own interpreter (`policy/venv`, which the install step makes
as `pulumi preview --policy-pack policy` would):

    policy/venv/bin/python policy/drive.py resources.json [policy-config.json]

`resources.json` is a list of {"type", "urn", "name", "props"} (props as the engine sends
them: secrets as Pulumi's secret objects, unknowns as Pulumi's unknown marker). The
pack's `__main__.py` runs unchanged; its gRPC servicer is taken before it starts serving,
configured like `--policy-pack-config`, asked to `Analyze` every resource, then to
`AnalyzeStack` them all. Prints one JSON list of {"urn", "policy", "level", "message"}.
"""

from __future__ import annotations

import contextlib
import json
import runpy
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc

PACK = Path(__file__).resolve().parent


class _Taken(Exception):
    """Raised instead of serving: the servicer has been taken."""


def take_servicer() -> Any:
    taken: list[Any] = []

    def capture(servicer: Any, server: Any) -> None:
        del server
        taken.append(servicer)
        raise _Taken

    analyzer_pb2_grpc.add_AnalyzerServicer_to_server = capture  # the pack's own import
    sys.path.insert(0, str(PACK))
    with contextlib.suppress(_Taken):
        runpy.run_path(str(PACK / "__main__.py"), run_name="__main__")
    (servicer,) = taken
    return servicer


def analyze(servicer: Any, resources: list[dict[str, Any]], config: dict[str, Any]) -> list[Any]:
    # As the engine does with `--policy-pack-config`: a policy's enforcement level stays
    # what the pack declares unless the config names one.
    info = servicer.GetAnalyzerInfo(None, None)
    declared = {policy.name: policy.enforcementLevel for policy in info.policies}
    request = proto.ConfigureAnalyzerRequest()
    for name, values in config.items():
        entry = request.policyConfig[name]
        entry.properties.update({k: v for k, v in values.items() if k != "enforcementLevel"})
        level = values.get("enforcementLevel")
        entry.enforcementLevel = (
            proto.EnforcementLevel.Value(level.upper()) if level else declared[name]
        )
    servicer.Configure(request, None)
    found = []
    for resource in resources:
        properties = struct_pb2.Struct()
        json_format.ParseDict(resource["props"], properties)
        response = servicer.Analyze(
            proto.AnalyzeRequest(
                type=resource["type"],
                properties=properties,
                urn=resource["urn"],
                name=resource["name"],
            ),
            None,
        )
        for diagnostic in response.diagnostics:
            found.append(
                {
                    "urn": resource["urn"],
                    "policy": diagnostic.policyName,
                    "level": proto.EnforcementLevel.Name(diagnostic.enforcementLevel),
                    "message": diagnostic.message,
                }
            )
    # Then the whole stack at once, as the engine does after the last resource.
    stack = proto.AnalyzeStackRequest()
    for resource in resources:
        properties = struct_pb2.Struct()
        json_format.ParseDict(resource["props"], properties)
        stack.resources.append(
            proto.AnalyzerResource(
                type=resource["type"], properties=properties, urn=resource["urn"],
                name=resource["name"],
            )
        )  # fmt: skip
    for diagnostic in servicer.AnalyzeStack(stack, None).diagnostics:
        found.append(
            {
                "urn": diagnostic.urn,
                "policy": diagnostic.policyName,
                "level": proto.EnforcementLevel.Name(diagnostic.enforcementLevel),
                "message": diagnostic.message,
            }
        )
    return found


def main(argv: list[str]) -> int:
    resources = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    config = json.loads(Path(argv[1]).read_text(encoding="utf-8")) if len(argv) > 1 else {}
    print(json.dumps(analyze(take_servicer(), resources, config)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
