"""The deploy and preview workflows can reach every stack's control plane."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.program.runner import MOCK_DNS_ENDPOINT, shared_run

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
# Runner labels GitHub hosts (outside any VPC, egress addresses not ours to list).
GITHUB_HOSTED = ("ubuntu-", "windows-", "macos-")


def _pulumi_jobs() -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            if any(str(s.get("uses", "")).startswith("pulumi/actions@") for s in job["steps"]):
                jobs.append((f"{path.name}:{name}", job))
    return jobs


def _stacks(job: dict[str, Any]) -> list[str]:
    matrix = job.get("strategy", {}).get("matrix", {})
    return list(matrix.get("stack", [])) + [i["stack"] for i in matrix.get("include", [])]


@pytest.mark.parametrize(("where", "job"), _pulumi_jobs(), ids=lambda v: str(v)[:30])
def test_a_github_hosted_runner_reaches_the_control_plane_of_every_stack_it_runs(
    where: str, job: dict[str, Any]
) -> None:
    stacks = _stacks(job)
    assert stacks, where
    hosted = str(job["runs-on"]).startswith(GITHUB_HOSTED)
    for stack_name in stacks:
        stack = load_stack_file(stack_name)
        if stack.cluster_mode != "gke":
            continue
        if hosted:
            # Only the DNS endpoint answers a runner that no authorized network lists.
            assert stack.control_plane_access == "dns", (where, stack_name)
        run = shared_run(stack_name)
        (cluster,) = run.of_type("gcp:container/cluster:Cluster")
        dns = cluster.inputs["controlPlaneEndpointsConfig"]["dnsEndpointConfig"]
        assert dns["allowExternalTraffic"] is (stack.control_plane_access == "dns")
        expected = MOCK_DNS_ENDPOINT if stack.control_plane_access == "dns" else None
        if expected:
            assert f"server: https://{expected}" in run.outputs["kubeconfig"]
            assert "certificate-authority-data" not in run.outputs["kubeconfig"]
