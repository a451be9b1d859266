"""The Serve REST API of a local cluster (what `serve deploy` / `serve status` use),
through Ray's own client (`ray.dashboard.modules.serve.sdk.ServeSubmissionClient`)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import requests
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

from localrun.polling import poll_until
from localrun.processes import LocalRunError

# The dashboard is not up yet, or restarting: "not yet" while polling.
UNREACHABLE = (requests.RequestException, ConnectionError)


@functools.cache
def _client(dashboard_url: str) -> ServeSubmissionClient:
    # Construction asks the dashboard for its Ray version: once per cluster, not per call.
    return ServeSubmissionClient(dashboard_url)


def deploy(dashboard_url: str, config: dict[str, Any], timeout_s: float = 10) -> None:
    """Apply a Serve config (declarative, like `serve deploy`). The config is the whole
    desired state, so sending it again is safe: a connection the dashboard closed before
    answering (seen on a loaded machine) is retried, a refusal is not."""

    def apply() -> bool:
        try:
            _client(dashboard_url).deploy_applications(config)
        except RuntimeError as exc:  # Ray's client: "Request failed with status code ..."
            raise LocalRunError(f"Serve rejected the config: {exc}") from None
        return True

    poll_until(
        apply,
        timeout_s=timeout_s,
        interval_s=1,
        ignore=(requests.ConnectionError,),
        what="the dashboard to take the Serve config",
    )


def applications(dashboard_url: str) -> dict[str, Any]:
    """Serve's view of every app: status, message, deployments and replicas."""
    details = _client(dashboard_url).get_serve_details()
    return dict(details.get("applications") or {})


def serve_details(dashboard_url: str) -> dict[str, Any]:
    """Everything Serve reports (apps, proxies, controller)."""
    return dict(_client(dashboard_url).get_serve_details())


def app_summary(app: dict[str, Any]) -> str:
    parts = []
    for name, dep in (app.get("deployments") or {}).items():
        states = Counter(r.get("state") for r in dep.get("replicas") or [])
        replicas = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        target = dep.get("target_num_replicas")
        detail = f" [{replicas or 'no replicas'}; target {target}]" if target is not None else ""
        parts.append(f"{name}: {dep.get('status')}{detail}")
    return f"{app.get('status')} ({'; '.join(parts) or 'no deployments yet'})"


def failure_details(app: dict[str, Any]) -> str:
    """The app's message and each deployment's (where the replica's exception is)."""
    lines = [app.get("message") or ""]
    for name, dep in (app.get("deployments") or {}).items():
        if dep.get("message"):
            lines.append(f"{name}: {dep['message']}")
    return "\n".join(line for line in lines if line)


def wait_until_running(
    dashboard_url: str,
    app_names: list[str],
    timeout_s: float,
    on_change: Callable[[str, str], None] = lambda app, summary: None,
) -> dict[str, Any]:
    """Poll until every app is RUNNING; LocalRunError with the app's error on failure."""
    last: dict[str, str] = {}
    apps: dict[str, Any] = {}

    def all_running() -> dict[str, Any] | None:
        nonlocal apps
        apps = applications(dashboard_url)
        for name in app_names:
            app = apps.get(name, {"status": "NOT_STARTED"})
            summary = app_summary(app)
            if last.get(name) != summary:
                last[name] = summary
                on_change(name, summary)
            if app.get("status") == "DEPLOY_FAILED":
                raise LocalRunError(f"app '{name}' failed to deploy:\n{failure_details(app)}")
        done = all(apps.get(n, {}).get("status") == "RUNNING" for n in app_names)
        return apps if done else None

    def not_running() -> LocalRunError:
        pending = {n: last.get(n) for n in app_names if apps.get(n, {}).get("status") != "RUNNING"}
        messages = "\n".join(
            f"  {n}: {apps.get(n, {}).get('message') or s}" for n, s in pending.items()
        )
        return LocalRunError(f"apps not RUNNING after {timeout_s:.0f}s:\n{messages}")

    return poll_until(all_running, timeout_s=timeout_s, ignore=UNREACHABLE, on_timeout=not_running)
