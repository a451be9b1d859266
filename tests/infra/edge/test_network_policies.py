"""The Ray namespace's NetworkPolicies: default deny, then exactly the allowed table."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import StackConfig
from infra.config.sources import load_stack_file
from infra.constants import GOOGLE_FRONTEND_RANGES
from infra.edge.network_policies import network_policies
from infra.program.render import program_objects
from tests.infra.helpers import STACKS
from tests.k8s_schemas import validation_errors

LB = "load-balancer"
OPERATOR = "kuberay-operator"
PROMETHEUS = "prometheus"
HEADS = "ray-heads"
ALL = "any"
# (policy, source, port): everything that may reach a pod of the Ray namespace.
EXPECTED = {
    ("serve-from-load-balancer", LB, 8000),
    ("serve-from-load-balancer", OPERATOR, 8000),
    ("dashboard-from-load-balancer", LB, 8265),
    ("dashboard-from-load-balancer", OPERATOR, 8265),
    ("ray-metrics-from-prometheus", PROMETHEUS, 8080),
    ("ray-metrics-from-prometheus", PROMETHEUS, 44217),
    ("ray-metrics-from-prometheus", PROMETHEUS, 44227),
    ("redis-from-ray-heads", HEADS, 6379),
    ("redis-from-ray-heads", PROMETHEUS, 9121),
}


def _source(peer: dict[str, Any], stack: StackConfig) -> str:
    if "ipBlock" in peer:
        cidr = peer["ipBlock"]["cidr"]
        assert cidr in [*GOOGLE_FRONTEND_RANGES, stack.proxy_only_cidr]
        return LB
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    if labels.get("app.kubernetes.io/name") == "kuberay-operator":
        return OPERATOR
    if labels.get("app.kubernetes.io/name") == "prometheus":
        return PROMETHEUS
    if labels == {"ray.io/node-type": "head"}:
        return HEADS
    if "app.kubernetes.io/instance" in labels:
        return f"same-cluster:{labels['app.kubernetes.io/instance']}"
    raise AssertionError(f"unexpected peer {peer}")


@pytest.mark.parametrize("stack_name", STACKS)
def test_network_policies_allow_exactly_the_table(stack_name: str) -> None:
    stack = load_stack_file(stack_name)
    policies = network_policies(stack)
    for policy in policies:
        assert validation_errors(policy) == [], policy["metadata"]["name"]
    default_deny = policies[0]
    assert default_deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    allowed = set()
    for policy in policies[1:]:
        for rule in policy["spec"]["ingress"]:
            sources = {_source(peer, stack) for peer in rule["from"]}
            ports = [p["port"] for p in rule.get("ports", [])] or [ALL]
            allowed |= {(policy["metadata"]["name"], s, p) for s in sources for p in ports}
    internal = {(f"{s.name}-ray-internal", f"same-cluster:{s.name}", ALL) for s in stack.services}
    assert allowed == EXPECTED | internal
    for service in stack.services:
        (policy,) = [p for p in policies if p["metadata"]["name"] == f"{service.name}-ray-internal"]
        assert policy["spec"]["podSelector"] == {
            "matchLabels": {"app.kubernetes.io/instance": service.name}
        }


def test_regional_gateways_reach_serve_from_the_proxy_only_subnet() -> None:
    stack = load_stack_file("dev").model_copy(
        update={"gateway_class": "gke-l7-regional-external-managed"}
    )
    (serve,) = [
        p for p in network_policies(stack) if p["metadata"]["name"] == "serve-from-load-balancer"
    ]
    cidrs = {
        peer["ipBlock"]["cidr"] for peer in serve["spec"]["ingress"][0]["from"] if "ipBlock" in peer
    }
    assert stack.proxy_only_cidr in cidrs


def test_haproxy_reaches_replicas_on_other_nodes() -> None:
    # HAProxy on any node forwards to ingress replicas on the others, on ports from the
    # direct-ingress range: the service's internal policy admits every port between its
    # own pods, and only them.
    (internal,) = [
        o for o in program_objects("dev") if o["metadata"]["name"].endswith("-ray-internal")
    ]
    (rule,) = internal["spec"]["ingress"]
    assert set(rule) == {"from"}  # no port list: every port
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"] == internal["spec"]["podSelector"]["matchLabels"]
