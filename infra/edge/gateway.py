"""Layer 10: the only way in. A GKE Gateway with TLS and a static address; every Serve
route behind the proxies' API-key check; the Ray dashboards and Grafana only behind IAP.

Hostnames: the Serve API at `<domain>`, Ray dashboards at `ray.<domain>/<service>/`,
Grafana at `ray.<domain>/-/grafana/` (the dashboards frame its panels from their own
origin); `grafana.<domain>` redirects there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from infra.config import Service, StackConfig, normalize_route_prefix
from infra.constants import (
    DASHBOARD_PORT,
    KPS_RELEASE,
    MONITORING_NAMESPACE,
    SERVE_PORT,
    is_global,
)
from infra.observability.monitoring import GRAFANA_PATH
from infra.rayservice.manifest import serve_service_name

GATEWAY_NAME = "rayserve"
IAP_SECRET = "iap-oauth-client"  # noqa: S105 - a Secret name; key `key` holds the secret
IAP_SECRET_KEY = "key"  # noqa: S105 - the key name GKE reads
GRAFANA_SERVICE = f"{KPS_RELEASE}-grafana"
GRAFANA_POD_PORT = 3000
GATEWAY_API = "gateway.networking.k8s.io/v1"
GKE_POLICY_API = "networking.gke.io/v1"


def hostnames(stack: StackConfig) -> dict[str, str]:
    return {
        "api": stack.domain,
        "ray": f"ray.{stack.domain}",
        "grafana": f"grafana.{stack.domain}",
    }


def certificate_map_name(name: str) -> str:
    return f"{name}-certs"


def head_service_name(service: Service) -> str:
    """The stable head Service KubeRay keeps for a RayService (the dashboard's)."""
    return f"{service.name}-head-svc"


def gateway_manifest(stack: StackConfig, name: str, address_name: str | None) -> dict[str, Any]:
    https: dict[str, Any] = {
        "name": "https",
        "protocol": "HTTPS",
        "port": 443,
        "tls": {"mode": "Terminate"},
        "allowedRoutes": {
            "namespaces": {
                "from": "Selector",
                "selector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": [stack.namespace, MONITORING_NAMESPACE],
                        }
                    ]
                },
            }
        },
    }
    annotations: dict[str, str] = {}
    if stack.cluster_mode == "existing":
        https["tls"]["certificateRefs"] = [{"kind": "Secret", "name": stack.tls_secret}]
    elif is_global(stack):
        annotations["networking.gke.io/certmap"] = certificate_map_name(name)
    else:
        https["tls"]["options"] = {"networking.gke.io/cert-manager-certs": f"{name}-cert"}
    http = {
        "name": "http",
        "protocol": "HTTP",
        "port": 80,
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    }
    spec: dict[str, Any] = {"gatewayClassName": stack.gateway_class, "listeners": [https, http]}
    if address_name:
        spec["addresses"] = [{"type": "NamedAddress", "value": address_name}]
    metadata: dict[str, Any] = {"name": GATEWAY_NAME, "namespace": stack.namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": metadata, "spec": spec}


def _route(
    stack: StackConfig,
    name: str,
    namespace: str,
    hosts: list[str],
    rules: list[dict[str, Any]],
    *,
    listener: str = "https",
) -> dict[str, Any]:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [
                {"name": GATEWAY_NAME, "namespace": stack.namespace, "sectionName": listener}
            ],
            "hostnames": hosts,
            "rules": rules,
        },
    }


def _prefix(value: str) -> list[dict[str, Any]]:
    return [{"path": {"type": "PathPrefix", "value": value}}]


def serve_route(stack: StackConfig, service: Service) -> dict[str, Any]:
    """One HTTPRoute per service: each app's prefix to the Serve proxies on port 8000."""
    backend = {"name": serve_service_name(service), "port": SERVE_PORT}
    rules = [
        {"matches": _prefix(normalize_route_prefix(app.route_prefix)), "backendRefs": [backend]}
        for app in service.apps
    ]
    return _route(stack, f"{service.name}-serve", stack.namespace, [hostnames(stack)["api"]], rules)


def dashboard_route(stack: StackConfig, service: Service) -> dict[str, Any]:
    """The Ray dashboard (and its job API) of one service at ray.<domain>/<service>/."""
    rewrite = {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}
    rule = {
        "matches": _prefix(f"/{service.name}/"),
        "filters": [{"type": "URLRewrite", "urlRewrite": rewrite}],
        "backendRefs": [{"name": head_service_name(service), "port": DASHBOARD_PORT}],
    }
    return _route(
        stack, f"{service.name}-dashboard", stack.namespace, [hostnames(stack)["ray"]], [rule]
    )


def grafana_route(stack: StackConfig) -> dict[str, Any]:
    """Grafana under the Ray dashboards' host, so the dashboards can frame its panels from
    their own origin: one IAP session, no third-party cookie (README: Observability).
    The path is stripped: Grafana serves from / and writes links under its root_url."""
    rewrite = {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}
    rule = {
        "matches": _prefix(GRAFANA_PATH),
        "filters": [{"type": "URLRewrite", "urlRewrite": rewrite}],
        "backendRefs": [{"name": GRAFANA_SERVICE, "port": 80}],
    }
    return _route(stack, "grafana", MONITORING_NAMESPACE, [hostnames(stack)["ray"]], [rule])


def grafana_redirect_route(stack: StackConfig) -> dict[str, Any]:
    """grafana.<domain> keeps working: it sends the browser to Grafana's one origin."""
    redirect = {
        "scheme": "https",
        "hostname": hostnames(stack)["ray"],
        "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": GRAFANA_PATH},
        "statusCode": 302,
    }
    rule = {"filters": [{"type": "RequestRedirect", "requestRedirect": redirect}]}
    hosts = [hostnames(stack)["grafana"]]
    return _route(stack, "grafana-redirect", MONITORING_NAMESPACE, hosts, [rule])


def redirect_route(stack: StackConfig) -> dict[str, Any]:
    """Plain HTTP on port 80 only ever answers with a redirect to HTTPS."""
    redirect = {"scheme": "https", "statusCode": 301}
    rule = {"filters": [{"type": "RequestRedirect", "requestRedirect": redirect}]}
    hosts = list(hostnames(stack).values())
    return _route(stack, "http-to-https", stack.namespace, hosts, [rule], listener="http")


def _target(name: str, namespace: str) -> dict[str, Any]:
    del namespace  # a policy targets a Service in its own namespace
    return {"group": "", "kind": "Service", "name": name}


def health_check_policy(name: str, namespace: str, path: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": GKE_POLICY_API,
        "kind": "HealthCheckPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "default": {
                "config": {"type": "HTTP", "httpHealthCheck": {"requestPath": path, "port": port}}
            },
            "targetRef": _target(name, namespace),
        },
    }


def serve_backend_policy(stack: StackConfig, service: Service, armor: str | None) -> dict[str, Any]:
    """The load balancer waits as long as Serve does: no silent 30 s cut."""
    default: dict[str, Any] = {"timeoutSec": stack.request_timeout_s}
    if armor:
        default["securityPolicy"] = armor
    name = serve_service_name(service)
    return {
        "apiVersion": GKE_POLICY_API,
        "kind": "GCPBackendPolicy",
        "metadata": {"name": name, "namespace": stack.namespace},
        "spec": {"default": default, "targetRef": _target(name, stack.namespace)},
    }


def iap_member_local_part(member: str) -> str:
    """`user:alice@example.com` -> `alice` (how IAM members were first named here)."""
    return member.split(":", 1)[1].split("@", maxsplit=1)[0]


def iap_backend_policy(name: str, namespace: str, client_id: Any) -> dict[str, Any]:
    return {
        "apiVersion": GKE_POLICY_API,
        "kind": "GCPBackendPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "default": {
                "iap": {
                    "enabled": True,
                    "clientID": client_id,
                    "oauth2ClientSecret": {"name": IAP_SECRET},
                }
            },
            "targetRef": _target(name, namespace),
        },
    }


def edge_objects(
    stack: StackConfig,
    name: str,
    *,
    address_name: str | None,
    armor: str | None,
    iap_client_id: Any,
) -> list[dict[str, Any]]:
    """Gateway, routes and the GKE policies that gate each backend."""
    objects = [gateway_manifest(stack, name, address_name), redirect_route(stack)]
    for service in stack.services:
        serve = serve_service_name(service)
        head = head_service_name(service)
        objects += [
            serve_route(stack, service),
            health_check_policy(serve, stack.namespace, "/-/healthz", SERVE_PORT),
            serve_backend_policy(stack, service, armor),
            dashboard_route(stack, service),
            health_check_policy(head, stack.namespace, "/api/gcs_healthz", DASHBOARD_PORT),
            iap_backend_policy(head, stack.namespace, iap_client_id),
        ]
    if stack.monitoring:
        objects += [
            grafana_route(stack),
            grafana_redirect_route(stack),
            health_check_policy(
                GRAFANA_SERVICE, MONITORING_NAMESPACE, "/api/health", GRAFANA_POD_PORT
            ),
            iap_backend_policy(GRAFANA_SERVICE, MONITORING_NAMESPACE, iap_client_id),
        ]
    return objects


@dataclass
class EdgeArgs:
    stack: StackConfig
    """The validated stack config."""
    iap_client_id: pulumi.Input[str] | None
    """The IAP OAuth client's id (ESC secret config `iapOAuthClientId`)."""
    iap_client_secret: pulumi.Input[str] | None
    """The IAP OAuth client's secret (ESC secret config `iapOAuthClientSecret`)."""
    subnetwork: pulumi.Input[str] | None = None
    """GKE mode, internal Gateway class: the subnet its address comes from."""


class Edge(pulumi.ComponentResource):
    """Gateway, TLS, static address, Cloud Armor, IAP and routes."""

    address: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("rayserve-gke:edge:Edge", name, None, opts)
        stack = args.stack
        child = pulumi.ResourceOptions(parent=self)
        on_gke = stack.cluster_mode == "gke"
        address_name = armor_name = None
        self.address = None
        if on_gke:
            address_name, armor_name = self._gcp(name, args, child)
        for namespace in [stack.namespace, *([MONITORING_NAMESPACE] if stack.monitoring else [])]:
            k8s.core.v1.Secret(
                f"{name}-iap-{namespace}",
                metadata={"name": IAP_SECRET, "namespace": namespace},
                string_data=pulumi.Output.secret(
                    cast(Any, {IAP_SECRET_KEY: args.iap_client_secret or ""})
                ),
                opts=child,
            )
        client_id = args.iap_client_id or ""
        for obj in edge_objects(
            stack, name, address_name=address_name, armor=armor_name, iap_client_id=client_id
        ):
            meta = obj["metadata"]
            k8s.apiextensions.CustomResource(
                f"{name}-{obj['kind'].lower()}-{meta['namespace']}-{meta['name']}",
                api_version=obj["apiVersion"],
                kind=obj["kind"],
                metadata=meta,
                spec=obj["spec"],
                opts=child,
            )
        self.register_outputs({})

    def _gcp(
        self, name: str, args: EdgeArgs, child: pulumi.ResourceOptions
    ) -> tuple[str, str | None]:
        stack = args.stack
        hosts = list(hostnames(stack).values())
        address_name = f"{name}-gateway"
        if is_global(stack):
            address: Any = gcp.compute.GlobalAddress(
                address_name, name=address_name, project=stack.gcp_project, opts=child
            )
            certificate = gcp.certificatemanager.Certificate(
                f"{name}-cert",
                name=f"{name}-cert",
                project=stack.gcp_project,
                # Load-balancer authorization: issued once DNS points at the address.
                managed={"domains": hosts},
                opts=child,
            )
            cert_map = gcp.certificatemanager.CertificateMap(
                certificate_map_name(name),
                name=certificate_map_name(name),
                project=stack.gcp_project,
                opts=child,
            )
            for i, host in enumerate(hosts):
                gcp.certificatemanager.CertificateMapEntry(
                    f"{name}-cert-entry-{i}",
                    name=f"{name}-entry-{i}",
                    map=cert_map.name,
                    hostname=host,
                    certificates=[certificate.id],
                    project=stack.gcp_project,
                    opts=child,
                )
        else:
            internal = stack.gateway_class == "gke-l7-rilb"
            address = gcp.compute.Address(
                address_name,
                name=address_name,
                region=stack.region,
                address_type="INTERNAL" if internal else "EXTERNAL",
                subnetwork=args.subnetwork if internal else None,
                project=stack.gcp_project,
                opts=child,
            )
            # Regional managed certificates are authorized through DNS records.
            authorizations = [
                gcp.certificatemanager.DnsAuthorization(
                    f"{name}-dns-auth-{i}",
                    name=f"{name}-dns-auth-{i}",
                    domain=host,
                    location=stack.region,
                    project=stack.gcp_project,
                    opts=child,
                )
                for i, host in enumerate(hosts)
            ]
            gcp.certificatemanager.Certificate(
                f"{name}-cert",
                name=f"{name}-cert",
                location=stack.region,
                project=stack.gcp_project,
                managed={
                    "domains": hosts,
                    "dns_authorizations": [a.id for a in authorizations],
                },
                opts=child,
            )
        self.address = address.address
        local_parts = [iap_member_local_part(m) for m in stack.iap_members]
        for member, local_part in zip(stack.iap_members, local_parts, strict=True):
            # Named by the whole member: `user:a@x.com` and `group:a@y.com` share a local
            # part. The old local-part name stays an alias where it was unique.
            old = f"{name}-iap-{local_part}"
            gcp.projects.IAMMember(
                f"{name}-iap-{member.replace(':', '-')}",
                project=stack.gcp_project,
                role="roles/iap.httpsResourceAccessor",
                member=member,
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        aliases=[pulumi.Alias(name=old)]
                        if local_parts.count(local_part) == 1
                        else []
                    ),
                ),
            )
        armor_name = None
        if stack.cloud_armor and is_global(stack):
            armor_name = f"{name}-serve-armor"
            gcp.compute.SecurityPolicy(
                armor_name, name=armor_name, project=stack.gcp_project,
                rules=cast(Any, cloud_armor_rules(stack)), opts=child,
            )  # fmt: skip
        return address_name, armor_name


WAF_RULES = ["sqli-v33-stable", "xss-v33-stable", "lfi-v33-stable", "rce-v33-stable"]


def cloud_armor_rules(stack: StackConfig) -> list[dict[str, Any]]:
    """Preconfigured WAF rules, a per-client-IP rate limit, then allow."""
    rules: list[dict[str, Any]] = [
        {
            "priority": 1000 + i,
            "action": "deny(403)",
            "description": f"preconfigured WAF: {rule}",
            "match": {"expr": {"expression": f"evaluatePreconfiguredWaf('{rule}')"}},
        }
        for i, rule in enumerate(WAF_RULES)
    ]
    rules.append(
        {
            "priority": 2000,
            "action": "throttle",
            "description": "per-client rate limit",
            "match": {"versioned_expr": "SRC_IPS_V1", "config": {"src_ip_ranges": ["*"]}},
            "rate_limit_options": {
                "conform_action": "allow",
                "exceed_action": "deny(429)",
                "enforce_on_key": "IP",
                "rate_limit_threshold": {"count": stack.rate_limit_per_minute, "interval_sec": 60},
            },
        }
    )
    rules.append(
        {
            "priority": 2147483647,
            "action": "allow",
            "description": "default",
            "match": {"versioned_expr": "SRC_IPS_V1", "config": {"src_ip_ranges": ["*"]}},
        }
    )
    return rules
