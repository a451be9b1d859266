"""The edge's Gateway: one Gateway, routes with the right gates, Cloud Armor, IAP."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import normalize_route_prefix
from infra.config.sources import load_stack_file
from infra.edge.gateway import cloud_armor_rules, edge_objects, hostnames
from infra.program.runner import is_secret, run_program
from infra.rayservice.serve_config import SERVE_PORT
from tests.infra.helpers import STACKS
from tests.k8s_schemas import validation_errors


def _edge(stack_name: str, **update: Any) -> list[dict[str, Any]]:
    stack = load_stack_file(stack_name).model_copy(update=update)
    return edge_objects(stack, f"rayserve-{stack_name}", address_name="addr", armor="armor",
                        iap_client_id="client-id")  # fmt: skip


def _kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("stack_name", STACKS)
@pytest.mark.parametrize(
    "gateway_class",
    ["gke-l7-global-external-managed", "gke-l7-regional-external-managed", "gke-l7-rilb"],
)
def test_gateway_and_routes_validate_against_gateway_api_1_4(
    stack_name: str, gateway_class: str
) -> None:
    objects = _edge(stack_name, gateway_class=gateway_class)
    for obj in _kind(objects, "Gateway") + _kind(objects, "HTTPRoute"):
        assert validation_errors(obj) == [], f"{obj['kind']} {obj['metadata']['name']}"
    (gateway,) = _kind(objects, "Gateway")
    assert gateway["spec"]["gatewayClassName"] == gateway_class
    https = gateway["spec"]["listeners"][0]
    assert (https["protocol"], https["port"]) == ("HTTPS", 443)


def test_a_broken_route_fails_validation() -> None:
    route = _kind(_edge("dev"), "HTTPRoute")[1]
    route["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Prefix"
    assert validation_errors(route)


@pytest.mark.parametrize("stack_name", STACKS)
def test_every_route_prefix_is_served_by_exactly_one_rule_on_port_8000(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    objects = _edge(stack_name)
    serve_routes = [
        r for r in _kind(objects, "HTTPRoute") if r["metadata"]["name"].endswith("-serve")
    ]
    served: dict[str, int] = {}
    for route in serve_routes:
        assert route["spec"]["hostnames"] == [stack.domain]
        for rule in route["spec"]["rules"]:
            (backend,) = rule["backendRefs"]
            assert backend["port"] == SERVE_PORT
            assert backend["name"].endswith("-serve-svc")
            for match in rule["matches"]:
                prefix = match["path"]["value"]
                served[prefix] = served.get(prefix, 0) + 1
    wanted = {normalize_route_prefix(app.route_prefix) for _, app in stack.all_apps()}
    assert served == dict.fromkeys(wanted, 1)


@pytest.mark.parametrize("stack_name", STACKS)
def test_human_uis_exist_only_behind_iap(stack_name: str) -> None:
    objects = _edge(stack_name)
    iap_targets = {
        (p["metadata"]["namespace"], p["spec"]["targetRef"]["name"])
        for p in _kind(objects, "GCPBackendPolicy")
        if p["spec"]["default"].get("iap", {}).get("enabled")
    }
    ui_backends = set()
    for route in _kind(objects, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            for backend in rule.get("backendRefs", []):
                if not backend["name"].endswith("-serve-svc"):
                    ui_backends.add((route["metadata"]["namespace"], backend["name"]))
    assert ui_backends, "no dashboard or Grafana route"
    assert ui_backends <= iap_targets
    assert ("monitoring", "kube-prometheus-stack-grafana") in ui_backends
    for policy in _kind(objects, "GCPBackendPolicy"):
        iap = policy["spec"]["default"].get("iap")
        if iap:
            assert iap["oauth2ClientSecret"] == {"name": "iap-oauth-client"}


def test_no_ui_route_without_monitoring_means_no_grafana() -> None:
    objects = _edge("dev", monitoring=False)
    assert not [r for r in _kind(objects, "HTTPRoute") if r["metadata"]["name"] == "grafana"]


def test_http_only_redirects_to_https() -> None:
    stack = load_stack_file("prod")
    (redirect,) = [
        r for r in _kind(_edge("prod"), "HTTPRoute") if r["metadata"]["name"] == "http-to-https"
    ]
    assert redirect["spec"]["parentRefs"][0]["sectionName"] == "http"
    assert set(redirect["spec"]["hostnames"]) == set(hostnames(stack).values())
    (rule,) = redirect["spec"]["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}
    ]


@pytest.mark.parametrize("stack_name", STACKS)
def test_backend_timeout_is_serves_request_timeout_and_health_checks_use_healthz(
    stack_name: str,
) -> None:
    stack = load_stack_file(stack_name)
    objects = _edge(stack_name)
    for policy in _kind(objects, "GCPBackendPolicy"):
        if policy["spec"]["targetRef"]["name"].endswith("-serve-svc"):
            assert policy["spec"]["default"]["timeoutSec"] == stack.request_timeout_s
            assert policy["spec"]["default"]["securityPolicy"] == "armor"
    serve_checks = [
        p
        for p in _kind(objects, "HealthCheckPolicy")
        if p["spec"]["targetRef"]["name"].endswith("-serve-svc")
    ]
    assert len(serve_checks) == len(stack.services)
    for check in serve_checks:
        assert check["spec"]["default"]["config"]["httpHealthCheck"] == {
            "requestPath": "/-/healthz",
            "port": 8000,
        }


def test_cloud_armor_rules() -> None:
    stack = load_stack_file("prod")
    rules = cloud_armor_rules(stack)
    assert {r["priority"] for r in rules} == {1000, 1001, 1002, 1003, 2000, 2147483647}
    (throttle,) = [r for r in rules if r["action"] == "throttle"]
    assert throttle["rate_limit_options"]["rate_limit_threshold"] == {
        "count": 600,
        "interval_sec": 60,
    }
    assert throttle["rate_limit_options"]["exceed_action"] == "deny(429)"
    assert any("sqli" in r["match"].get("expr", {}).get("expression", "") for r in rules)


@pytest.mark.parametrize("stack_name", STACKS)
def test_edge_under_mocks(stack_name: str) -> None:
    run = run_program(stack_name)
    iap_secrets = [s for s in run.of_type("kubernetes:core/v1:Secret") if "-iap-" in s.name]
    assert len(iap_secrets) == 2 and all(is_secret(s.inputs["stringData"]) for s in iap_secrets)
    stack = load_stack_file(stack_name)
    members = {r.inputs["member"] for r in run.of_type("gcp:projects/iAMMember:IAMMember")
               if r.inputs["role"] == "roles/iap.httpsResourceAccessor"}  # fmt: skip
    assert members == set(stack.iap_members)
    armor = run.of_type("gcp:compute/securityPolicy:SecurityPolicy")
    assert bool(armor) is stack.cloud_armor
    assert run.of_type("gcp:compute/globalAddress:GlobalAddress")
    (cert,) = run.of_type("gcp:certificatemanager/certificate:Certificate")
    assert set(cert.inputs["managed"]["domains"]) == set(hostnames(stack).values())
    assert run.outputs["endpoints"]["api"] == f"https://{stack.domain}"


def test_existing_cluster_uses_the_tls_secret() -> None:
    stack = load_stack_file("dev").model_copy(
        update={
            "cluster_mode": "existing",
            "kube_context": "kind",
            "image_repository": "r",
            "tls_secret": "rayserve-tls",
        }
    )
    (gateway,) = _kind(
        edge_objects(stack, "x", address_name=None, armor=None, iap_client_id="c"), "Gateway"
    )
    assert gateway["spec"]["listeners"][0]["tls"]["certificateRefs"] == [
        {"kind": "Secret", "name": "rayserve-tls"}
    ]
    assert "addresses" not in gateway["spec"]
