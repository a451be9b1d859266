"""Cloud Monitoring policies: Memorystore watched on the instance the program creates, with
the in-cluster Redis' thresholds; GKE scale-up failures named; routed by severity."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.config import PROJECT_ROOT
from infra.config.sources import load_stack_file
from infra.observability.cloud_alerts import (
    channel_args,
    failover_query,
    memorystore_instance_id,
    memorystore_policies,
    routed_channels,
    scale_up_policies,
)
from infra.program.runner import ProgramRun, is_secret, run_program, shared_run
from localrun.toolchain import SYSTEM_TOOLS, find_tool, install_hint

POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"


@pytest.fixture(scope="module")
def prod() -> ProgramRun:
    return shared_run("prod")


def _policies(run: ProgramRun) -> dict[str, dict]:
    return {r.inputs["displayName"]: r.inputs for r in run.of_type(POLICY)}


def test_prod_watches_every_memorystore_instance_it_creates(prod: ProgramRun) -> None:
    stack = load_stack_file("prod")
    instances = prod.of_type("gcp:redis/instance:Instance")
    assert len(instances) == len(stack.services)  # one GCS Redis per service
    names = [i.inputs["name"] for i in instances]
    instance_ids = [memorystore_instance_id(stack, name) for name in names]
    region = "projects/acme-ml-platform-prod/locations/us-central1/instances/"
    assert instance_ids == [region + name for name in names]
    policies = _policies(prod)
    memorystore = {k: v for k, v in policies.items() if k.startswith("Memorystore")}
    assert set(memorystore) == {
        "MemorystoreMemoryHigh", "MemorystoreUnavailable", "MemorystoreClientsHigh",
        "MemorystoreCpuHigh", "MemorystoreFailover",
    }  # fmt: skip
    for name, policy in memorystore.items():
        (condition,) = policy["conditions"]
        body = next(v for k, v in condition.items() if k.startswith("condition"))
        text = body.get("filter") or body.get("query")
        for instance_id in instance_ids:  # each its own series, so its own incident
            assert instance_id in text.replace("\\", ""), name

    def threshold(name: str) -> float:
        return policies[name]["conditions"][0]["conditionThreshold"]["thresholdValue"]

    # The in-cluster Redis' thresholds, from the same config keys.
    assert threshold("MemorystoreMemoryHigh") == stack.alert_redis_memory_percent / 100
    assert threshold("MemorystoreClientsHigh") == stack.alert_redis_connected_clients
    assert threshold("MemorystoreCpuHigh") == stack.alert_redis_cpu_percent / 100
    cpu = policies["MemorystoreCpuHigh"]["conditions"][0]["conditionThreshold"]
    assert cpu["aggregations"][0]["perSeriesAligner"] == "ALIGN_RATE"  # a DELTA metric
    absent = policies["MemorystoreUnavailable"]["conditions"][0]["conditionAbsent"]
    assert absent["duration"] == "300s"


def test_policies_notify_by_severity_through_channels_from_the_esc_secrets(
    prod: ProgramRun,
) -> None:
    channels = {r.name: r for r in prod.of_type(CHANNEL)}
    pager, chat = (
        channels["rayserve-prod-critical-channel"],
        channels["rayserve-prod-warning-channel"],
    )
    assert pager.inputs["type"] == "pagerduty" and is_secret(pager.inputs["sensitiveLabels"])
    assert chat.inputs["type"] == "slack" and is_secret(chat.inputs["sensitiveLabels"])
    assert chat.inputs["labels"] == {"channel_name": load_stack_file("prod").alert_slack_channel}
    for policy in prod.of_type(POLICY):
        severity = policy.inputs["userLabels"]["severity"]
        assert policy.inputs["severity"] == severity.upper()
        notified = {urn.rsplit("::", 1)[1] for urn in policy.dependencies if CHANNEL in urn}
        assert notified == {f"rayserve-prod-{severity}-channel"}, policy.name


def test_without_a_pager_critical_policies_reach_the_chat() -> None:
    assert routed_channels("critical", {"critical", "warning"}) == ["critical"]
    assert routed_channels("critical", {"warning"}) == ["warning"]
    assert routed_channels("warning", {"critical"}) == []
    assert channel_args(load_stack_file("dev"), None, None) == {}


def test_dev_has_no_memorystore_and_existing_clusters_no_cloud_policies() -> None:
    dev = shared_run("dev")
    assert set(_policies(dev)) == {"GkeScaleUpStockout", "GkeScaleUpQuotaExceeded"}
    existing = run_program(
        "dev",
        {
            "clusterMode": "existing",
            "kubeContext": "kind-x",
            "imageRepository": "r/x",
            "tlsSecret": "tls",
        },
    )
    assert not existing.of_type(POLICY)
    assert not run_program("prod", {"monitoring": False}).of_type(POLICY)


def test_scale_up_failures_are_read_from_this_clusters_autoscaler_log(prod: ProgramRun) -> None:
    (cluster,) = prod.of_type("gcp:container/cluster:Cluster")
    policies = _policies(prod)
    for name, message in [
        ("GkeScaleUpStockout", "scale.up.error.out.of.resources"),
        ("GkeScaleUpQuotaExceeded", "scale.up.error.quota.exceeded"),
    ]:
        policy = policies[name]
        log_filter = policy["conditions"][0]["conditionMatchedLog"]["filter"]
        assert f'resource.labels.cluster_name="{cluster.inputs["name"]}"' in log_filter
        assert "container.googleapis.com%2Fcluster-autoscaler-visibility" in log_filter
        assert f'errorMsg.messageId="{message}"' in log_filter
        # A log match is an event: Cloud Monitoring requires a notification rate limit.
        assert policy["alertStrategy"]["notificationRateLimit"] == {"period": "3600s"}


def test_every_cloud_policy_has_a_runbook() -> None:
    runbooks = (PROJECT_ROOT / "docs" / "runbooks.md").read_text()
    anchors = set(re.findall(r"^## (\S+)", runbooks, re.MULTILINE))
    stack = load_stack_file("prod")
    for policy in [*memorystore_policies(stack, ["x"]), *scale_up_policies(stack, "c")]:
        assert policy.name in anchors, policy.name
        content = policy.args("p", [])["documentation"]["content"]
        assert content.endswith(f"runbooks.md#{policy.name.lower()}")


def test_the_failover_query_fires_for_the_instance_that_failed_over(tmp_path: Path) -> None:
    """The PromQL condition, on series named as Cloud Monitoring names Memorystore's
    metrics for PromQL, run by promtool: a failover at 10m fires, then clears."""
    promtool = find_tool("promtool")
    assert promtool, install_hint(SYSTEM_TOOLS["promtool"])
    ours = "projects/p/locations/r/instances/rayserve-prod-embeddings"
    also = "projects/p/locations/r/instances/rayserve-prod-classifier"
    other = "projects/p/locations/r/instances/someone-elses"
    query = failover_query([ours, also])
    rules = {"groups": [{"name": "cloud", "rules": [{"alert": "MemorystoreFailover",
                                                      "expr": query}]}]}  # fmt: skip

    def role(instance: str, node: str, values: str) -> dict[str, str]:
        return {
            "series": "redis_googleapis_com:replication_role{monitored_resource="
            f'"redis_instance", instance_id="{instance}", node_id="{node}"}}',
            "values": values,
        }

    series = [
        role(ours, "node-0", "1x10 0x30"), role(ours, "node-1", "0x10 1x30"),  # fails over
        role(also, "node-0", "1x40"), role(also, "node-1", "0x40"),  # stays as it is
        role(other, "node-0", "1x10 0x30"), role(other, "node-1", "0x10 1x30"),  # not ours
    ]  # fmt: skip
    fired = [{"exp_labels": {"instance_id": ours}}]
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": [
            {"eval_time": "9m", "alertname": "MemorystoreFailover", "exp_alerts": []},
            {"eval_time": "12m", "alertname": "MemorystoreFailover", "exp_alerts": fired},
            {"eval_time": "25m", "alertname": "MemorystoreFailover", "exp_alerts": []},
        ]}],
    }  # fmt: skip
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
