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
from infra.observability.alerts import KSM_POD_LABELS, prometheus_rule_manifest
from infra.pod_security import container_security_context, pod_security_context

RELEASE_NAME = KPS_RELEASE
DATASOURCE_UID = "prometheus"
DASHBOARD_LABEL = "grafana_dashboard"
GRAFANA_ADMIN_SECRET = "grafana-admin"  # noqa: S105 - a Secret name
PROMETHEUS_URL = f"http://{RELEASE_NAME}-prometheus.{MONITORING_NAMESPACE}.svc:9090"
GRAFANA_URL = f"http://{RELEASE_NAME}-grafana.{MONITORING_NAMESPACE}.svc:80"
MONITOR_LABELS = {"release": RELEASE_NAME, "app.kubernetes.io/part-of": "rayserve-gke"}
# Browsers reach Grafana under the Ray dashboards' host, at this path (the edge strips
# it): the dashboard page and its Grafana iframes share one origin, so one IAP session
# covers both and Grafana may be framed by 'self' only. See the README's Observability.
GRAFANA_PATH = "/-/grafana"
# IAP signs every request it lets through; Grafana signs the user in from it as a Viewer.
IAP_JWT_HEADER = "X-Goog-Iap-Jwt-Assertion"
IAP_JWKS_URL = "https://www.gstatic.com/iap/verify/public_key-jwk"
IAP_ISSUER = "https://cloud.google.com/iap"
# Grafana's default Content-Security-Policy, plus who may frame it: only its own origin.
GRAFANA_CSP = (
    "script-src 'self' 'unsafe-eval' 'unsafe-inline' 'strict-dynamic' $NONCE;"
    "object-src 'none';font-src 'self';style-src 'self' 'unsafe-inline' blob:;"
    "img-src * data:;base-uri 'self';"
    "connect-src 'self' grafana.com ws://$ROOT_PATH wss://$ROOT_PATH;"
    "manifest-src 'self';media-src 'none';form-action 'self';frame-ancestors 'self';"
)
PAGER_RECEIVER = "pager"
CHAT_RECEIVER = "chat"
SLACK_POST_MESSAGE = "https://slack.com/api/chat.postMessage"

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
    # The RayService a pod belongs to (our pod template label): alerts group and
    # inhibit by it across its clusters (old and new during an upgrade).
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "rayservice",
    },
]


# Each RayService's GCS Redis is `<service>-gcs-redis` (infra/redis.py): its alerts carry
# the service too, so a Redis outage holds back that service's warnings.
REDIS_RELABELINGS = [
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "regex": "(.+)-gcs-redis",
        "replacement": "$1",
        "targetLabel": "rayservice",
    },
]


def ray_dashboard_host(stack: StackConfig) -> str:
    """The host of the Ray dashboards, and of Grafana under GRAFANA_PATH (edge layer)."""
    return f"ray.{stack.domain}"


def grafana_external_url(stack: StackConfig) -> str:
    return f"https://{ray_dashboard_host(stack)}{GRAFANA_PATH}/"


def _resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    # No CPU limit: throttling a monitoring component hides the incident it should show.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def grafana_values(stack: StackConfig) -> dict[str, Any]:
    """Grafana: embeddable by the Ray dashboards' origin only, IAP users signed in."""
    return {
        "nodeSelector": {ROLE_LABEL: "system"},
        "resources": _resources("100m", "256Mi", "512Mi"),
        "securityContext": pod_security_context(472, 472, fs_group=472),
        # Not read-only: Grafana writes its SQLite database, plugins and temporary files
        # outside the chart's volumes.
        "containerSecurityContext": container_security_context(read_only_root=False),
        "admin": {
            "existingSecret": GRAFANA_ADMIN_SECRET,
            "userKey": "admin-user",
            "passwordKey": "admin-password",
        },
        "sidecar": {
            "resources": _resources("50m", "96Mi", "256Mi"),
            "securityContext": container_security_context(read_only_root=False),
            "dashboards": {
                "enabled": True,
                "label": DASHBOARD_LABEL,
                "labelValue": "1",
                "searchNamespace": "ALL",
            },
            "datasources": {"uid": DATASOURCE_UID},
        },
        "grafana.ini": {
            # The edge strips GRAFANA_PATH, so Grafana serves from / inside the cluster
            # (probes, the Ray head's RAY_GRAFANA_HOST) and writes links under the path.
            "server": {
                "domain": ray_dashboard_host(stack),
                "root_url": grafana_external_url(stack),
                "serve_from_sub_path": False,
            },
            "security": {
                "allow_embedding": True,
                "content_security_policy": True,
                "content_security_policy_template": GRAFANA_CSP,
                "cookie_secure": True,
                "cookie_samesite": "lax",
            },
            "auth.jwt": {
                "enabled": True,
                "header_name": IAP_JWT_HEADER,
                "email_claim": "email",
                "username_claim": "email",
                "jwk_set_url": IAP_JWKS_URL,
                "cache_ttl": "60m",
                "expect_claims": f'{{"iss": "{IAP_ISSUER}"}}',
                "auto_sign_up": True,
            },
            "users": {"auto_assign_org_role": "Viewer"},
        },
    }


def kps_values(stack: StackConfig) -> dict[str, Any]:
    """kube-prometheus-stack values; every key exists in the pinned chart (a test checks).

    Every component runs with requests and a memory limit, non-root, without privilege
    escalation or capabilities, under RuntimeDefault seccomp; read-only root filesystems
    everywhere but Grafana. node-exporter keeps the host network, PID namespace and
    read-only host paths it reads the node's metrics from (the one exception)."""
    system = {ROLE_LABEL: "system"}
    restricted = container_security_context()
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
            },
            # Ours (alerts.py) replace them: tested, with runbooks, routed by severity.
            "disabled": {"TargetDown": True, "PrometheusRuleFailures": True},
        },
        "prometheusOperator": {
            "nodeSelector": system,
            "resources": _resources("100m", "128Mi", "256Mi"),
            "securityContext": pod_security_context(65534, 65534, fs_group=65534),
            "containerSecurityContext": restricted,
            "prometheusConfigReloader": {"resources": _resources("10m", "32Mi", "64Mi")},
            "admissionWebhooks": {
                "patch": {
                    "nodeSelector": system,
                    "resources": _resources("10m", "32Mi", "64Mi"),
                    "securityContext": pod_security_context(2000, 2000),
                },
                "createSecretJob": {"securityContext": restricted},
                "patchWebhookJob": {"securityContext": restricted},
            },
        },
        "prometheus": {
            "prometheusSpec": {
                "retention": stack.prometheus_retention,
                "nodeSelector": system,
                "resources": _resources("500m", "2Gi", "4Gi"),
                # Pod level; the operator sets the restricted context on its containers.
                "securityContext": pod_security_context(1000, 2000, fs_group=2000),
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
        "alertmanager": {
            "alertmanagerSpec": {
                "nodeSelector": system,
                "resources": _resources("50m", "64Mi", "128Mi"),
                "securityContext": pod_security_context(1000, 2000, fs_group=2000),
            }
        },
        "grafana": grafana_values(stack),
        "kube-state-metrics": {
            "nodeSelector": system,
            "resources": _resources("50m", "128Mi", "256Mi"),
            "securityContext": pod_security_context(65534, 65534, fs_group=65534),
            "containerSecurityContext": restricted,
            # Pod labels the RayPodPending alert names the RayService and group by.
            "metricLabelsAllowlist": [f"pods=[{','.join(KSM_POD_LABELS)}]"],
        },
        # On every node (GPU nodes too); host network, PID and paths are how it sees
        # the node, everything else is restricted.
        "prometheus-node-exporter": {
            "resources": _resources("50m", "32Mi", "128Mi"),
            "securityContext": pod_security_context(65534, 65534),
            "containerSecurityContext": restricted,
        },
    }


def alertmanager_config(
    stack: StackConfig, pagerduty_key: str | None, slack_token: str | None
) -> dict[str, Any]:
    """Critical alerts page (PagerDuty), warnings go to Slack; a critical alert about a
    RayService silences that service's warnings while it fires."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    if pagerduty_key:
        receivers.append(
            {
                "name": PAGER_RECEIVER,
                "pagerduty_configs": [{"routing_key": pagerduty_key, "send_resolved": True}],
            }
        )
    if slack_token:
        receivers.append(
            {
                "name": CHAT_RECEIVER,
                "slack_configs": [
                    {
                        # chat.postMessage with the bot token: the same Slack app Cloud
                        # Monitoring posts through (cloud_alerts.py).
                        "api_url": SLACK_POST_MESSAGE,
                        "http_config": {
                            "authorization": {"type": "Bearer", "credentials": slack_token}
                        },
                        "channel": stack.alert_slack_channel,
                        "send_resolved": True,
                        "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                        "text": "{{ range .Alerts }}*{{ .Annotations.summary }}*\n"
                        "{{ .Annotations.description }}\n{{ .Annotations.runbook_url }}\n"
                        "{{ end }}",
                    }
                ],
            }
        )
    routes: list[dict[str, Any]] = [
        # The chart's always-firing heartbeat: nobody needs to hear it.
        {"receiver": "null", "matchers": ['alertname="Watchdog"']},
    ]
    # Without a pager, critical alerts still reach the chat rather than nobody.
    critical = PAGER_RECEIVER if pagerduty_key else CHAT_RECEIVER if slack_token else None
    if critical:
        routes.append({"receiver": critical, "matchers": ['severity="critical"']})
    if slack_token:
        routes.append({"receiver": CHAT_RECEIVER, "matchers": ['severity="warning"']})
    same_service = ["namespace", "rayservice"]
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "namespace", "rayservice", "application"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            # The rayservice matcher matters: alerts without the label would otherwise
            # all count as "the same service".
            {
                "source_matchers": ['severity="critical"', 'rayservice=~".+"'],
                "target_matchers": ['severity=~"warning|info"'],
                "equal": same_service,
            },
            # The chart's own: a critical alert silences the same alert's lower levels.
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity=~"warning|info"'],
                "equal": ["namespace", "alertname"],
            },
            {
                "source_matchers": ['severity="warning"'],
                "target_matchers": ['severity="info"'],
                "equal": ["namespace", "alertname"],
            },
        ],
        "receivers": receivers,
        "templates": ["/etc/alertmanager/config/*.tmpl"],
    }


def pod_monitors(ray_namespace: str) -> list[dict[str, Any]]:
    """Ray heads (Ray, autoscaler and dashboard metrics) and workers; GCS Redis."""

    def monitor(
        name: str,
        selector: dict[str, str],
        ports: list[str],
        relabelings: list[dict[str, Any]] = RAY_RELABELINGS,
    ) -> dict[str, Any]:
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": name, "namespace": MONITORING_NAMESPACE, "labels": MONITOR_LABELS},
            "spec": {
                "namespaceSelector": {"matchNames": [ray_namespace]},
                "selector": {"matchLabels": selector},
                "podMetricsEndpoints": [
                    {"port": port, "interval": "15s", "relabelings": relabelings} for port in ports
                ],
            },
        }

    return [
        monitor(
            "ray-head", {"ray.io/node-type": "head"}, ["metrics", "as-metrics", "dash-metrics"]
        ),
        monitor("ray-worker", {"ray.io/node-type": "worker"}, ["metrics"]),
        monitor(
            "gcs-redis",
            {"app.kubernetes.io/name": "gcs-redis"},
            ["redis-metrics"],
            REDIS_RELABELINGS,
        ),
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
    pagerduty_key: pulumi.Input[str] | None
    """Where critical alerts page (ESC secret `alertPagerDutyKey`); None: nowhere."""
    slack_token: pulumi.Input[str] | None
    """Slack bot token warnings are posted with (ESC secret `alertSlackToken`)."""


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
                pulumi.Output.all(args.pagerduty_key, args.slack_token).apply(
                    lambda keys: alertmanager_config(stack, keys[0], keys[1])
                ),
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
        # The head's dashboard checks Grafana's and Prometheus' health from inside.
        {"name": "RAY_GRAFANA_HOST", "value": GRAFANA_URL},
        {"name": "RAY_PROMETHEUS_HOST", "value": PROMETHEUS_URL},
        # The browser loads the iframes from this path on the page's own origin
        # (https://ray.<domain>, where the edge routes it to Grafana): same origin, same
        # IAP session, and right for any domain the stack serves.
        {"name": "RAY_GRAFANA_IFRAME_HOST", "value": GRAFANA_PATH},
        {"name": "RAY_PROMETHEUS_NAME", "value": DATASOURCE_UID},
    ]
