"""Secret stack config (from the stack's ESC environment): which keys exist, when each
is required, what a valid value looks like.

Checked before any resource is declared, like the plain keys. A problem names the key
and what is allowed, and never echoes the value: these messages reach terminals and CI
logs. The values go on as Pulumi secrets (`StackSecrets`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.config.errors import ConfigIssue
from infra.config.models import StackConfig
from serve_apps.auth.keys import KeyFileError, parse_key_hashes

# (value, the parsed stack or None when its plain config is invalid) -> problem or None
Check = Callable[[Any, StackConfig | None], str | None]


def _never(_: StackConfig) -> bool:
    return False


def _always(_: StackConfig) -> bool:
    return True


def _token(min_length: int, what: str) -> Check:
    """A password or token: printable ASCII without spaces or quotes (it lands in config
    files and Secrets), long enough to resist guessing."""

    def check(value: Any, _: StackConfig | None) -> str | None:
        if not isinstance(value, str) or not re.fullmatch(r"[!#-&(-~]+", value):
            return f"must be {what}: printable ASCII without spaces, quotes or backslashes"
        if len(value) < min_length:
            return f"must be {what} of at least {min_length} characters"
        return None

    return check


def _api_key_hashes(value: Any, _: StackConfig | None) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return (
                "is not JSON; allowed: an object of key name -> SHA-256 hex digest, e.g. "
                '{"team-search": "<64 hex>"} (`python -m serve_apps.auth new-key NAME` '
                "prints one entry)"
            )
    try:
        parse_key_hashes(value)
    except KeyFileError as exc:
        return str(exc).replace("the key file", "apiKeyHashes")
    return None


def _matching(pattern: str, problem: str) -> Check:
    """A value that must match `pattern` in full; `problem` says what is allowed."""

    def check(value: Any, _: StackConfig | None) -> str | None:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            return problem
        return None

    return check


_iap_client_id = _matching(
    r"\d+-[a-z0-9]+\.apps\.googleusercontent\.com",
    "is not an OAuth client id; allowed: <number>-<id>.apps.googleusercontent.com "
    "(APIs & Services > Credentials in the GCP console)",
)
_pagerduty_key = _matching(
    r"[A-Za-z0-9]{32}",
    "is not a PagerDuty integration key; allowed: the 32-character key of an "
    "Events API v2 integration (PagerDuty service > Integrations)",
)
_slack_token = _matching(
    r"xoxb-[A-Za-z0-9-]{20,}",
    "is not a Slack bot token; allowed: xoxb-... of a Slack app with the chat:write "
    "scope, invited to alertSlackChannel",
)


def _redis_password(value: Any, stack: StackConfig | None) -> str | None:
    if stack is not None and stack.redis != "in-cluster":
        return (
            f"is only used with redis in-cluster (this stack has redis {stack.redis}; "
            "Memorystore generates its own AUTH string): remove it"
        )
    return _token(16, "a secret")(value, stack)


def _app_secrets(value: Any, stack: StackConfig | None) -> str | None:
    """`{service: {NAME: value}}`: exactly the variables each service's secretEnv lists."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return "is not JSON; allowed: an object {service: {VARIABLE: value}}"
    if not isinstance(value, dict) or not all(
        isinstance(v, dict) and all(isinstance(x, str) and x for x in v.values())
        for v in value.values()
    ):
        return "allowed: an object {service: {VARIABLE: non-empty string value}}"
    return None if stack is None else _app_secrets_match(value, stack)


def _app_secrets_match(value: dict[str, dict[str, str]], stack: StackConfig) -> str | None:
    wanted = {service.name: set(service.secret_env) for service in stack.services}
    for service, variables in value.items():
        if service not in wanted:
            return f"has service '{service}', not in this stack; allowed: {', '.join(wanted)}"
        if set(variables) != wanted[service]:
            missing = sorted(wanted[service] - set(variables))
            unused = sorted(set(variables) - wanted[service])
            return (
                f"services.{service}: must hold exactly its secretEnv variables"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; not in secretEnv: {', '.join(unused)}" if unused else "")
            )
    absent = [s for s, names in wanted.items() if names and s not in value]
    if absent:
        return f"has no variables for service(s) {', '.join(absent)}, whose secretEnv lists some"
    return None


@dataclass(frozen=True)
class SecretKey:
    key: str
    meaning: str
    check: Check
    required: Callable[[StackConfig], bool] = _never
    when_required: str = ""


SECRET_KEYS: tuple[SecretKey, ...] = (
    SecretKey(
        "apiKeyHashes",
        "Named SHA-256 hashes of the API keys the Serve apps accept.",
        _api_key_hashes,
        _always,
        "without it every request is refused",
    ),
    SecretKey(
        "iapOAuthClientId",
        "The OAuth client IAP signs users in with (Ray dashboards, Grafana).",
        _iap_client_id,
        _always,
        "IAP guards ray.<domain> and grafana.<domain>",
    ),
    SecretKey(
        "iapOAuthClientSecret",
        "That OAuth client's secret.",
        _token(8, "an OAuth client secret"),
        _always,
        "IAP guards ray.<domain> and grafana.<domain>",
    ),
    SecretKey(
        "redisPassword",
        "In-cluster GCS Redis: the secret every service's Redis passwords are derived "
        "from (HMAC per service and user; each generated when unset).",
        _redis_password,
    ),
    SecretKey(
        "grafanaAdminPassword",
        "Grafana's admin password (generated when unset).",
        _token(12, "a password"),
    ),
    SecretKey(
        "alertPagerDutyKey",
        "PagerDuty Events API v2 integration key: critical alerts page through it.",
        _pagerduty_key,
        lambda stack: stack.production and stack.monitoring,
        "a production stack must page on its critical alerts",
    ),
    SecretKey(
        "alertSlackToken",
        "Slack bot token: warnings are posted to alertSlackChannel with it.",
        _slack_token,
        lambda stack: stack.production and stack.monitoring,
        "a production stack must deliver its warnings",
    ),
)
SECRET_KEYS += (
    SecretKey(
        "appSecrets",
        "Secret environment variables of the apps: {service: {NAME: value}}.",
        _app_secrets,
        lambda stack: any(service.secret_env for service in stack.services),
        "a service lists secretEnv variables",
    ),
)
SECRET_KEY_NAMES = tuple(spec.key for spec in SECRET_KEYS)


def secret_issues(values: Mapping[str, Any], stack: StackConfig | None) -> list[ConfigIssue]:
    """Problems with the secret values (None or absent = not set), values never shown.
    Without a valid `stack`, only each value's own shape is checked."""
    issues = []
    for spec in SECRET_KEYS:
        value = values.get(spec.key)
        if value is None or value == "":
            if stack is not None and spec.required(stack):
                issues.append(
                    ConfigIssue(
                        spec.key,
                        f"required secret is not set ({spec.when_required}): add it to the "
                        f"stack's ESC environment, or `pulumi config set --secret {spec.key}`",
                    )
                )
            continue
        problem = spec.check(value, stack)
        if problem:
            issues.append(ConfigIssue(spec.key, f"(secret, value not shown) {problem}"))
    return issues


def plaintext_secret_issues(keys: set[str]) -> list[ConfigIssue]:
    """Secret keys given as plain config: they would sit in the stack file and the state."""
    return [
        ConfigIssue(
            key,
            "is a secret but was set as plain config: set it in the stack's ESC environment "
            f"or with `pulumi config set --secret {key}` (and remove the plaintext value)",
        )
        for key in sorted(keys & set(SECRET_KEY_NAMES))
    ]
