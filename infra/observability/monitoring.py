"""Layer 5: Prometheus, Alertmanager and Grafana, what they scrape, and the dashboards.

kube-prometheus-stack is installed as a `helm.v3.Release`: the chart's Helm hooks (the
admission-webhook certificate create/patch jobs and the CRD upgrade job) must run, or
the operator's webhook has no certificate and upgrades leave old CRDs behind;
`helm.v4.Chart` would skip them silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.config import StackConfig
from infra.constants import KPS_CHART, KPS_RELEASE, MONITORING_NAMESPACE, ROLE_LABEL
from infra.observability.alerts import prometheus_rule_manifest

RELEASE_NAME = KPS_RELEASE
DATASOURCE_UID = "prometheus"
DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_ADMIN_SECRET = "grafana-admin"  # noqa: S105 - a Secret name
PROMETHEUS_URL = f"http://{RELEASE_NAME}-prometheus.{MONITORING_NAMESPACE}.svc:9090"
GRAFANA_URL = f"http://{RELEASE_NAME}-grafana.{MONITORING_NAMESPACE}.svc:80"
MONITOR_LABELS = {"release": RELEASE_NAME, "app.kubernetes.io/part-of": "rayserve-gke"}

# Ray's pod labels, copied onto every series so Ray's dashboards can filter by cluster.
RAY_RELABELINGS = [
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_cluster"],
        "targetLabel": "ray_io_cluster",
    },
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_ray_io_node_type"],
        "targetLabel": "ray_node_type",
    },
]


def kps_values(stack: StackConfig) -> dict[str, Any]:
    """kube-prometheus-stack values; every key exists in the pinned chart (a test checks)."""
    system = {ROLE_LABEL: "system"}
    return {
        # GKE runs the control plane: there is no scheduler, controller manager, etcd or
        # kube-proxy to scrape, and their rules would alert on absent targets forever.
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "defaultRules": {
            "rules": {
                "etcd": False,
                "kubeControllerManager": False,
                "kubeSchedulerAlerting": False,
                "kubeSchedulerRecording": False,
                "kubeProxy": False,
            }
        },
        "prometheusOperator": {"nodeSelector": system},
        "prometheus": {
            "prometheusSpec": {
                "retention": stack.prometheus_retention,
                "nodeSelector": system,
                # Pick up every PodMonitor/ServiceMonitor/PrometheusRule, not only the
                # chart's own: ours, KubeRay's and the GPU Operator's.
                "podMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "storageSpec": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": stack.prometheus_volume_size}},
                        }
                    }
                },
            }
        },
        "alertmanager": {"alertmanagerSpec": {"nodeSelector": system}},
        "grafana": {
            "admin": {
                "existingSecret": GRAFANA_ADMIN_SECRET,
                "userKey": "admin-user",
                "passwordKey": "admin-password",
            },
            "sidecar": {
                "dashboards": {
                    "enabled": True,
                    "label": DASHBOARD_LABEL,
                    "labelValue": "1",
                    "searchNamespace": "ALL",
                },
                "datasources": {"uid": DATASOURCE_UID},
            },
        },
    }


def alertmanager_config(webhook_url: str | None) -> dict[str, Any]:
    """Route everything to one webhook receiver (Slack, PagerDuty, ...) when configured."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    route: dict[str, Any] = {
        "receiver": "null",
        "group_by": ["alertname", "namespace", "application"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "4h",
        "routes": [],
    }
    if webhook_url:
        receivers.append(
            {"name": "oncall", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        )
        route["routes"] = [{"receiver": "oncall", "matchers": ['severity=~"critical|warning"']}]
    return {"route": route, "receivers": receivers}


def pod_monitors(ray_namespace: str) -> list[dict[str, Any]]:
    """Ray heads (Ray, autoscaler and dashboard metrics) and workers; GCS Redis."""

    def monitor(name: str, selector: dict[str, str], ports: list[str]) -> dict[str, Any]:
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": name, "namespace": MONITORING_NAMESPACE, "labels": MONITOR_LABELS},
            "spec": {
                "namespaceSelector": {"matchNames": [ray_namespace]},
                "selector": {"matchLabels": selector},
                "podMetricsEndpoints": [
                    {"port": port, "interval": "15s", "relabelings": RAY_RELABELINGS}
                    for port in ports
                ],
            },
        }

    return [
        monitor(
            "ray-head", {"ray.io/node-type": "head"}, ["metrics", "as-metrics", "dash-metrics"]
        ),
        monitor("ray-worker", {"ray.io/node-type": "worker"}, ["metrics"]),
        monitor("gcs-redis", {"app.kubernetes.io/name": "gcs-redis"}, ["redis-metrics"]),
    ]


def dashboard_configmap(name: str, dashboard_json: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"dashboard-{name}",
            "namespace": MONITORING_NAMESPACE,
            "labels": {DASHBOARD_LABEL: "1", "app.kubernetes.io/part-of": "rayserve-gke"},
        },
        "data": {f"{name}.json": dashboard_json},
    }


def monitoring_objects(stack: StackConfig) -> list[dict[str, Any]]:
    """Every object this layer applies besides the chart: monitors, rules, dashboards."""
    from infra.observability.dashboards import all_dashboards  # noqa: PLC0415 - imports Ray's factory

    return [
        *pod_monitors(stack.namespace),
        prometheus_rule_manifest(stack, MONITORING_NAMESPACE),
        *(dashboard_configmap(name, text) for name, text in all_dashboards(stack).items()),
    ]


@dataclass
class MonitoringArgs:
    stack: StackConfig
    """The validated stack config."""
    grafana_admin_password: pulumi.Input[str] | None
    """From ESC secret config; None generates one."""
    alert_webhook_url: pulumi.Input[str] | None
    """Alertmanager's receiver (Slack, PagerDuty, ...), from ESC secret config."""


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack, our monitors and alert rules, and the dashboards."""

    release: k8s.helm.v3.Release

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:observability:Monitoring", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            f"{name}-monitoring-ns", metadata={"name": MONITORING_NAMESPACE}, opts=child
        )
        after_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        password = (
            args.grafana_admin_password
            or (
                random.RandomPassword(f"{name}-grafana-admin", length=32, special=False, opts=child)
            ).result
        )
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": MONITORING_NAMESPACE},
            string_data=pulumi.Output.secret(
                cast(Any, {"admin-user": "admin", "admin-password": password})
            ),
            opts=after_namespace,
        )
        values = kps_values(stack)
        values["alertmanager"]["config"] = pulumi.Output.secret(
            cast(
                Any,
                pulumi.Output.from_input(args.alert_webhook_url).apply(alertmanager_config),
            )
        )
        self.release = k8s.helm.v3.Release(
            f"{name}-kps",
            name=RELEASE_NAME,
            chart=KPS_CHART.chart,
            version=KPS_CHART.version,
            repository_opts={"repo": KPS_CHART.repository},
            namespace=MONITORING_NAMESPACE,
            values=values,
            timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, admin]),
        )
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[self.release])
        for obj in monitoring_objects(stack):
            _apply_object(
                f"{name}-{obj['kind'].lower()}-{obj['metadata']['name']}", obj, after_crds
            )
        self.register_outputs({})


def _apply_object(name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
    if obj["kind"] == "ConfigMap":
        k8s.core.v1.ConfigMap(name, metadata=obj["metadata"], data=obj["data"], opts=opts)
    else:
        k8s.apiextensions.CustomResource(
            name,
            api_version=obj["apiVersion"],
            kind=obj["kind"],
            metadata=obj["metadata"],
            spec=obj["spec"],
            opts=opts,
        )


def ray_head_monitoring_env() -> list[dict[str, str]]:
    """What the Ray dashboard needs for its metrics tab (embedded Grafana panels)."""
    return [
        {"name": "RAY_GRAFANA_HOST", "value": GRAFANA_URL},
        {"name": "RAY_PROMETHEUS_HOST", "value": PROMETHEUS_URL},
        # Browsers load the panels through the IAP-protected Grafana route (edge layer).
        {"name": "RAY_GRAFANA_IFRAME_HOST", "value": "/grafana"},
        {"name": "RAY_PROMETHEUS_NAME", "value": DATASOURCE_UID},
    ]
