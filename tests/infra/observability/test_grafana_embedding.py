"""Grafana inside the Ray dashboard: the iframe URL the dashboard builds reaches Grafana
through the edge, from the dashboard's own origin, behind the same IAP, and Grafana lets
exactly that origin frame it."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from infra.config import StackConfig
from infra.config.sources import load_stack_file
from infra.edge.gateway import GRAFANA_SERVICE, edge_objects, hostnames
from infra.observability.dashboards import all_dashboards
from infra.observability.monitoring import (
    DATASOURCE_UID,
    IAP_JWKS_URL,
    IAP_JWT_HEADER,
    kps_values,
)
from infra.program.render import program_objects

OAUTH_CLIENT = "123-abc.apps.googleusercontent.com"


def _head_env(stack_name: str) -> dict[str, str]:
    (rs,) = [o for o in program_objects(stack_name) if o["kind"] == "RayService"][:1]
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in head["env"]}


def ray_metrics_tab_iframe(env: dict[str, str], dashboard_uid: str, session: str) -> str:
    """The iframe src of the Ray dashboard's Metrics tab, built as Ray 2.60's frontend
    does (dashboard/client/src/pages/metrics/Metrics.tsx, buildDashboardUrl)."""
    params = {
        "orgId": "1", "theme": "light", "kiosk": "1", "refresh": "5s", "from": "now-5m",
        "to": "now", "var-SessionName": session,
        "var-datasource": env["RAY_PROMETHEUS_NAME"],
    }  # fmt: skip
    return f"{env['RAY_GRAFANA_IFRAME_HOST']}/d/{dashboard_uid}/?{urlencode(params)}"


def _edge(stack: StackConfig) -> list[dict[str, Any]]:
    return edge_objects(stack, "rayserve", address_name="addr", armor=None,
                        iap_client_id=OAUTH_CLIENT)  # fmt: skip


def _route_for(objects: list[dict[str, Any]], url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTPRoute rule the Gateway picks for an https URL (longest path prefix)."""
    parts = urlsplit(url)
    candidates = []
    for route in objects:
        if route["kind"] != "HTTPRoute" or route["spec"]["parentRefs"][0]["sectionName"] != "https":
            continue
        if parts.hostname not in route["spec"]["hostnames"]:
            continue
        for rule in route["spec"]["rules"]:
            for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
                prefix = match["path"]["value"].rstrip("/")
                if parts.path == prefix or parts.path.startswith(prefix + "/"):
                    candidates.append((len(prefix), route, rule))
    assert candidates, f"no route serves {url}"
    _, route, rule = max(candidates, key=lambda c: c[0])
    return route, rule


@pytest.mark.parametrize("stack_name", ["dev", "prod"])
def test_the_metrics_tab_iframe_reaches_grafana_from_the_dashboards_origin(
    stack_name: str,
) -> None:
    stack = load_stack_file(stack_name)
    service = stack.services[0]
    objects = _edge(stack)
    grafana_ini = kps_values(stack)["grafana"]["grafana.ini"]
    # Ray's head names the uid of its default dashboard: the one we provision.
    default = json.loads(all_dashboards(stack)["ray-default"])
    from ray.dashboard.modules.metrics import grafana_dashboard_factory

    assert default["uid"] == grafana_dashboard_factory.generate_default_grafana_dashboard()[1]

    # The page: the service's dashboard at ray.<domain>/<service>/ (its own route).
    page = f"https://{hostnames(stack)['ray']}/{service.name}/#/metrics"
    page_route, _ = _route_for(objects, page)
    assert page_route["metadata"]["name"] == f"{service.name}-dashboard"
    src = ray_metrics_tab_iframe(_head_env(stack_name), default["uid"], "session_1")
    iframe = urljoin(page, src)  # what the browser loads
    print(f"\n{stack_name}: the Ray dashboard at {page} frames {iframe}")

    # Same origin as the page: the IAP session cookie (host-only, set for ray.<domain>)
    # goes along; no third-party cookie, no sign-in redirect inside the frame.
    assert urlsplit(iframe)[:2] == urlsplit(page)[:2] == ("https", hostnames(stack)["ray"])
    route, rule = _route_for(objects, iframe)
    assert route["metadata"] == {"name": "grafana", "namespace": "monitoring"}
    assert rule["backendRefs"] == [{"name": GRAFANA_SERVICE, "port": 80}]
    # The edge strips the prefix; Grafana's root_url puts it back into every link.
    prefix = rule["matches"][0]["path"]["value"]
    (rewrite,) = rule["filters"]
    assert rewrite["urlRewrite"]["path"]["replacePrefixMatch"] == "/"
    assert urlsplit(iframe).path.removeprefix(prefix) == f"/d/{default['uid']}/"
    assert grafana_ini["server"]["root_url"] == f"https://{hostnames(stack)['ray']}{prefix}/"
    assert grafana_ini["server"]["serve_from_sub_path"] is False

    # Grafana may be framed, and only by its own origin, which is the dashboard's.
    security = grafana_ini["security"]
    assert security["allow_embedding"] is True
    assert security["content_security_policy"] is True
    directives = dict(
        d.strip().split(" ", 1) for d in security["content_security_policy_template"].split(";")
        if d.strip()
    )  # fmt: skip
    assert directives["frame-ancestors"] == "'self'"
    assert security["cookie_secure"] is True

    # One IAP, one OAuth client, for the dashboard and Grafana: one sign-in covers both.
    iap = {
        p["spec"]["targetRef"]["name"]: p["spec"]["default"]["iap"]
        for p in objects
        if p["kind"] == "GCPBackendPolicy" and "iap" in p["spec"]["default"]
    }
    dashboard_backend = page_route["spec"]["rules"][0]["backendRefs"][0]["name"]
    assert iap[GRAFANA_SERVICE] == iap[dashboard_backend]
    assert iap[GRAFANA_SERVICE]["clientID"] == OAUTH_CLIENT
    # Grafana signs the IAP user in from IAP's signed header: panels show, no login form.
    jwt = grafana_ini["auth.jwt"]
    assert (jwt["enabled"], jwt["header_name"], jwt["jwk_set_url"]) == (
        True, IAP_JWT_HEADER, IAP_JWKS_URL)  # fmt: skip
    assert json.loads(jwt["expect_claims"]) == {"iss": "https://cloud.google.com/iap"}
    assert grafana_ini["users"]["auto_assign_org_role"] == "Viewer"


def test_the_head_checks_grafana_inside_the_cluster_and_names_our_datasource() -> None:
    env = _head_env("dev")
    assert env["RAY_GRAFANA_HOST"] == "http://kube-prometheus-stack-grafana.monitoring.svc:80"
    assert env["RAY_PROMETHEUS_NAME"] == DATASOURCE_UID
    # A path on the page's own origin, not a host of its own: right for any domain.
    assert env["RAY_GRAFANA_IFRAME_HOST"].startswith("/") and "://" not in env[
        "RAY_GRAFANA_IFRAME_HOST"]  # fmt: skip


def test_grafana_domain_redirects_to_grafanas_one_origin() -> None:
    stack = load_stack_file("prod")
    routes = [o for o in _edge(stack) if o["kind"] == "HTTPRoute"]
    (redirect,) = [r for r in routes if r["metadata"]["name"] == "grafana-redirect"]
    assert redirect["spec"]["hostnames"] == [hostnames(stack)["grafana"]]
    ((rule_filter,),) = [rule["filters"] for rule in redirect["spec"]["rules"]]
    target = rule_filter["requestRedirect"]
    root = urlsplit(kps_values(stack)["grafana"]["grafana.ini"]["server"]["root_url"])
    assert (target["scheme"], target["hostname"]) == (root.scheme, root.hostname)
    assert target["path"]["replacePrefixMatch"] + "/" == root.path


def test_a_grafana_on_another_origin_would_be_caught() -> None:
    """The same-origin check can fail: Grafana on its own host is another origin."""
    stack = load_stack_file("dev")
    page = f"https://{hostnames(stack)['ray']}/serving/"
    elsewhere = urljoin(page, f"https://{hostnames(stack)['grafana']}/d/x/")
    assert urlsplit(elsewhere)[:2] != urlsplit(page)[:2]
