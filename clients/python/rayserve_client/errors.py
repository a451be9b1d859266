"""What a call raises when it does not succeed."""

from __future__ import annotations

import json
from typing import Any

import httpx


class RayServeError(Exception):
    """Base of every error this client raises."""


class ApiError(RayServeError):
    """The service answered with an error status (after any retries).

    `reason` is the server's own words (the apps answer `{"error": reason, "details":
    ...}`; Serve and HAProxy answer plain text), `details` the structured part if any.
    """

    def __init__(
        self,
        status: int,
        reason: str,
        *,
        method: str,
        url: str,
        details: Any = None,
        attempts: int = 1,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.details = details
        self.method = method
        self.url = url
        self.attempts = attempts
        self.retry_after_s = retry_after_s
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        extra = f"; details: {json.dumps(details)[:500]}" if details is not None else ""
        super().__init__(f"{method} {url} -> {status}: {reason}{extra}{tried}")

    @classmethod
    def from_response(
        cls, response: httpx.Response, attempts: int, retry_after_s: float | None = None
    ) -> ApiError:
        reason, details = _reason(response)
        kind = AuthenticationError if response.status_code in (401, 403) else cls
        return kind(
            response.status_code,
            reason,
            method=response.request.method,
            url=str(response.request.url),
            details=details,
            attempts=attempts,
            retry_after_s=retry_after_s,
        )


class AuthenticationError(ApiError):
    """401/403: the API key is missing, unknown or revoked (never retried)."""


class UnreachableError(RayServeError):
    """No answer at all: connection refused or reset, or a timeout (after any retries).
    The transport's own exception is the `__cause__`."""

    def __init__(self, message: str, *, method: str, url: str, attempts: int) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        tried = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{method} {url}: {message}{tried}")


class ResponseFormatError(RayServeError):
    """A 2xx answer whose body is not what the route returns (wrong URL or route?)."""


def _reason(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:500] or response.reason_phrase or "no reason given"), None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"], body.get("details")
    return json.dumps(body)[:500], None
