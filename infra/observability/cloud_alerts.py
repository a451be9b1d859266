"""Layer 5 (GKE mode): what Prometheus cannot see, as Cloud Monitoring alert policies.

- Memorystore, the prod GCS Redis: memory, clients, CPU, unavailable, failover. Its
  metrics live in Cloud Monitoring already, and a policy there keeps watching when the
  cluster (and its Prometheus) is the thing that is down; an exporter would need the
  instance's AUTH string and CA in the monitoring namespace, and still could not tell a
  failover from a restart. Thresholds are the in-cluster Redis alerts' (alerts.py).
- GKE's autoscaler failing to add a node: spot stock-out, quota exhausted. Only the
  autoscaler's visibility log says why a Ray pod stays Pending.

Severity routing matches Alertmanager's: critical pages PagerDuty, warning posts to
Slack, through channels made from the same ESC secrets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.config import StackConfig
from infra.observability.alerts import RUNBOOK_BASE

REDIS_METRICS = "redis.googleapis.com"
AUTOSCALER_LOG = "container.googleapis.com%2Fcluster-autoscaler-visibility"
# What the autoscaler's visibility log says when a scale-up fails, by alert.
SCALE_UP_ERRORS = {
    "GkeScaleUpStockout": "scale.up.error.out.of.resources",
    "GkeScaleUpQuotaExceeded": "scale.up.error.quota.exceeded",
}


@dataclass(frozen=True)
class CloudPolicy:
    """One alert policy: its name (the runbook anchor), severity and policy arguments."""

    name: str
    severity: str  # "critical" or "warning", as in the PrometheusRule
    summary: str
    conditions: list[dict[str, Any]]
    log_based: bool = False

    def args(self, project: str, channels: list[Any]) -> dict[str, Any]:
        """gcp.monitoring.AlertPolicy's arguments."""
        strategy: dict[str, Any] = {"auto_close": "1800s"}
        if self.log_based:  # a log match is an event: notify at most hourly
            strategy["notification_rate_limit"] = {"period": "3600s"}
        return {
            "project": project,
            "display_name": self.name,
            "combiner": "OR",
            "severity": self.severity.upper(),
            "conditions": self.conditions,
            "notification_channels": channels,
            "alert_strategy": strategy,
            "user_labels": {"severity": self.severity, "app": "rayserve-gke"},
            "documentation": {
                "subject": f"[{self.severity}] {self.summary}",
                "content": f"{self.summary}. Runbook: {RUNBOOK_BASE}#{self.name.lower()}",
                "mime_type": "text/markdown",
            },
        }


def memorystore_instance_id(stack: StackConfig, instance: str) -> str:
    """The `instance_id` label of Memorystore's metrics: the instance's full name."""
    return f"projects/{stack.gcp_project}/locations/{stack.region}/instances/{instance}"


def _redis_filter(metric: str, instance_ids: list[str]) -> str:
    quoted = ", ".join(f'"{i}"' for i in instance_ids)
    return (
        f'resource.type="redis_instance" AND resource.labels.instance_id=one_of({quoted}) '
        f'AND metric.type="{REDIS_METRICS}/{metric}"'
    )


def _threshold(
    name: str,
    filter_: str,
    value: float,
    *,
    aligner: str = "ALIGN_MAX",
    reducer: str = "REDUCE_MAX",
    group_by: tuple[str, ...] = ("resource.label.instance_id",),
) -> dict[str, Any]:
    """Above `value` for 10 minutes, one series per instance (or per `group_by`)."""
    return {
        "display_name": name,
        "condition_threshold": {
            "filter": filter_,
            "comparison": "COMPARISON_GT",
            "threshold_value": value,
            "duration": "600s",
            "aggregations": [
                {
                    "alignment_period": "60s",
                    "per_series_aligner": aligner,
                    "cross_series_reducer": reducer,
                    "group_by_fields": list(group_by),
                }
            ],
            "trigger": {"count": 1},
        },
    }


def failover_query(instance_ids: list[str]) -> str:
    """PromQL on Cloud Monitoring's metric names: a node's role (1 primary, 0 replica)
    changed within 10 minutes, i.e. that instance failed over."""
    role = f"{REDIS_METRICS.replace('.', '_')}:replication_role"
    # GCP names hold only letters, digits, `-` and `/`: nothing a regex reads specially.
    assert all(re.fullmatch(r"[a-z0-9/-]+", i) for i in instance_ids), instance_ids
    ids = "|".join(instance_ids)
    selector = f'{role}{{monitored_resource="redis_instance", instance_id=~"{ids}"}}'
    return f"max by (instance_id) (changes({selector}[10m])) > 0"


def memorystore_policies(stack: StackConfig, instances: list[str]) -> list[CloudPolicy]:
    """One policy per alert, over every service's instance: each instance is its own
    time series, so its own incident."""
    instance_ids = [memorystore_instance_id(stack, i) for i in instances]
    what = "A GCS Memorystore instance"

    def metric(name: str) -> str:
        return _redis_filter(name, instance_ids)

    memory = stack.alert_redis_memory_percent
    cpu = stack.alert_redis_cpu_percent
    clients = stack.alert_redis_connected_clients
    return [
        CloudPolicy(
            "MemorystoreMemoryHigh",
            "critical",
            f"{what} uses more than {memory}% of its memory",
            [_threshold("memory usage ratio", metric("stats/memory/usage_ratio"), memory / 100)],
        ),
        CloudPolicy(
            "MemorystoreUnavailable",
            "critical",
            f"{what} reports no metrics: unavailable",
            [
                {
                    "display_name": "no uptime reported",
                    "condition_absent": {
                        "filter": metric("server/uptime"),
                        "duration": "300s",
                        "aggregations": [
                            {
                                "alignment_period": "60s",
                                "per_series_aligner": "ALIGN_MEAN",
                                "cross_series_reducer": "REDUCE_MAX",
                                "group_by_fields": ["resource.label.instance_id"],
                            }
                        ],
                        "trigger": {"count": 1},
                    },
                }
            ],
        ),
        CloudPolicy(
            "MemorystoreClientsHigh",
            "warning",
            f"{what} has more than {clients} clients",
            [_threshold("connected clients", metric("clients/connected"), clients)],
        ),
        CloudPolicy(
            "MemorystoreCpuHigh",
            "warning",
            f"{what} uses more than {cpu}% of a core",
            [
                # CPU-seconds per second over user/system and the main process and its
                # forks, per node: Redis serves on one thread.
                _threshold(
                    "CPU seconds per second",
                    metric("stats/cpu_utilization"),
                    cpu / 100,
                    aligner="ALIGN_RATE",
                    reducer="REDUCE_SUM",
                    group_by=("resource.label.instance_id", "resource.label.node_id"),
                )
            ],
        ),
        CloudPolicy(
            "MemorystoreFailover",
            "warning",
            f"{what} failed over to its replica",
            [
                {
                    "display_name": "a node changed role",
                    "condition_prometheus_query_language": {
                        "query": failover_query(instance_ids),
                        "duration": "0s",
                        "evaluation_interval": "60s",
                        "alert_rule": "MemorystoreFailover",
                        # A new instance has reported no sample yet when this is created.
                        "disable_metric_validation": True,
                    },
                }
            ],
        ),
    ]


def scale_up_filter(stack: StackConfig, cluster: str, message_id: str) -> str:
    """Cloud Logging: the autoscaler's scale-up results for this cluster, one error."""
    return "\n".join(
        [
            'resource.type="k8s_cluster"',
            f'resource.labels.cluster_name="{cluster}"',
            f'logName="projects/{stack.gcp_project}/logs/{AUTOSCALER_LOG}"',
            f'jsonPayload.resultInfo.results.errorMsg.messageId="{message_id}"',
        ]
    )


def scale_up_policies(stack: StackConfig, cluster: str) -> list[CloudPolicy]:
    summaries = {
        "GkeScaleUpStockout": "GKE could not add a node: the zone is out of that machine "
        "(spot or GPU stock-out)",
        "GkeScaleUpQuotaExceeded": "GKE could not add a node: a project quota (GPUs, CPUs, "
        "IPs) is exhausted",
    }
    return [
        CloudPolicy(
            name,
            "warning",
            summaries[name],
            [
                {
                    "display_name": message_id,
                    "condition_matched_log": {
                        "filter": scale_up_filter(stack, cluster, message_id),
                    },
                }
            ],
            log_based=True,
        )
        for name, message_id in SCALE_UP_ERRORS.items()
    ]


def _scale_up_conditions(stack: StackConfig, index: int) -> Any:
    def conditions(cluster: str) -> list[dict[str, Any]]:
        return scale_up_policies(stack, cluster)[index].conditions

    return conditions


def channel_args(
    stack: StackConfig, pagerduty_key: Any | None, slack_token: Any | None
) -> dict[str, dict[str, Any]]:
    """gcp.monitoring.NotificationChannel arguments by severity, for the secrets given."""
    channels: dict[str, dict[str, Any]] = {}
    if pagerduty_key:
        channels["critical"] = {
            "type": "pagerduty",
            "display_name": "rayserve-gke paging (PagerDuty)",
            "sensitive_labels": {"service_key": pagerduty_key},
        }
    if slack_token:
        channels["warning"] = {
            "type": "slack",
            "display_name": f"rayserve-gke {stack.alert_slack_channel} (Slack)",
            "labels": {"channel_name": stack.alert_slack_channel},
            "sensitive_labels": {"auth_token": slack_token},
        }
    return channels


def routed_channels(severity: str, available: set[str]) -> list[str]:
    """Which channel a policy notifies: as Alertmanager routes (critical falls back to
    the chat when there is no pager)."""
    wanted = ["critical", "warning"] if severity == "critical" else ["warning"]
    return [next(s for s in wanted if s in available)] if available & set(wanted) else []


@dataclass
class CloudAlertsArgs:
    stack: StackConfig
    """The validated stack config (GKE mode)."""
    cluster_name: pulumi.Input[str]
    """The GKE cluster whose autoscaler is watched."""
    memorystore_instances: list[str]
    """The Memorystore instances (one per service's GCS) to watch; none: no policies."""
    pagerduty_key: pulumi.Input[str] | None
    """ESC secret `alertPagerDutyKey`: critical policies page through it."""
    slack_token: pulumi.Input[str] | None
    """ESC secret `alertSlackToken`: warnings are posted to alertSlackChannel."""


class CloudAlerts(pulumi.ComponentResource):
    """Cloud Monitoring notification channels and alert policies."""

    def __init__(
        self, name: str, args: CloudAlertsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:observability:CloudAlerts", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        channels = {
            severity: gcp.monitoring.NotificationChannel(
                f"{name}-{severity}-channel", project=stack.gcp_project, **spec, opts=child
            ).name
            for severity, spec in channel_args(stack, args.pagerduty_key, args.slack_token).items()
        }

        def declare(policy: CloudPolicy, conditions: Any) -> None:
            targets = [channels[s] for s in routed_channels(policy.severity, set(channels))]
            policy_args = {**policy.args(stack.gcp_project, targets), "conditions": conditions}
            gcp.monitoring.AlertPolicy(f"{name}-{policy.name.lower()}", **policy_args, opts=child)

        if args.memorystore_instances:
            for policy in memorystore_policies(stack, args.memorystore_instances):
                declare(policy, policy.conditions)
        # The log filters name the cluster: taken from the cluster resource itself.
        cluster = pulumi.Output.from_input(args.cluster_name)
        for index, policy in enumerate(scale_up_policies(stack, "")):
            declare(policy, cluster.apply(_scale_up_conditions(stack, index)))
        self.register_outputs({})
