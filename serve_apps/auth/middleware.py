"""ASGI middleware that makes every Serve route need `Authorization: Bearer <key>`.

Ray Serve loads it through
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=serve_apps.auth.middleware:proxy_middlewares`
into every HTTP server it runs: the proxy of every node and, with HAProxy as the data
plane (`serveIngress: haproxy`), every ingress replica's own server behind HAProxy.
Keys are read from the JSON file named by `RAYSERVE_API_KEYS_FILE` ({name: sha256}) and
re-read when the file changes, so adding or removing a key needs no restart. Without a
readable key file every request is refused: the proxy fails closed.
"""

import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware

from serve_apps.auth.keys import KeyFileError, match_key, parse_key_file

KEYS_FILE_ENV = "RAYSERVE_API_KEYS_FILE"
# Probes and the route table carry no model output and must work without a key.
OPEN_PATHS = frozenset({"/-/healthz", "/-/routes"})
RELOAD_CHECK_INTERVAL_S = 1.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("ray.serve")


class KeyStore:
    """Named key hashes from a file, re-read when its content changes.

    The content's digest decides, not mtime/size/inode: a rewrite of the same size
    within one timestamp tick is still noticed, and a read that races a writer (an
    empty or half-written file) is retried at the next check instead of being trusted.
    """

    def __init__(
        self, path: Path | None, check_interval_s: float = RELOAD_CHECK_INTERVAL_S
    ) -> None:
        self.path = path
        self._check_interval_s = check_interval_s
        self._hashes: dict[str, str] = {}
        self._digest: str | None = None
        self._next_check = 0.0
        self._error: str | None = None

    def hashes(self) -> dict[str, str]:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_interval_s
            self._refresh()
        return self._hashes

    def _refresh(self) -> None:
        if self.path is None:
            self._fail(f"{KEYS_FILE_ENV} is not set")
            return
        try:
            # read_bytes() follows symlinks: a Kubernetes Secret update swaps the link.
            content = self.path.read_bytes()
        except OSError as exc:
            self._fail(f"cannot read {self.path}: {exc.strerror}")
            return
        digest = hashlib.sha256(content).hexdigest()
        if digest == self._digest:
            return
        try:
            self._hashes = parse_key_file(content, self.path)
        except KeyFileError as exc:
            self._fail(str(exc))
            return
        self._digest = digest
        self._error = None
        logger.info("API keys loaded from %s: %s", self.path, ", ".join(sorted(self._hashes)))

    def _fail(self, error: str) -> None:
        self._hashes, self._digest = {}, None
        if error != self._error:
            logger.error("API keys unavailable, refusing all requests: %s", error)
        self._error = error


class ApiKeyMiddleware:
    """401 with `WWW-Authenticate: Bearer` unless the request carries a known key."""

    def __init__(self, app: ASGIApp, keys_file: str | None = None) -> None:
        self.app = app
        path = keys_file or os.environ.get(KEYS_FILE_ENV)
        self.store = KeyStore(Path(path) if path else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            # Fail closed: a scope type this check does not know never reaches the app.
            logger.error("refused an ASGI scope of unknown type %r", scope["type"])
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _bearer_token(scope)
        name = match_key(presented, self.store.hashes()) if presented else None
        if name is None:
            await _unauthorized(
                scope, send, "missing API key" if not presented else "invalid API key"
            )
            return
        scope.setdefault("state", {})["api_key_name"] = name
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> str | None:
    for header, value in scope.get("headers", []):
        if header == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


async def _unauthorized(scope: Scope, send: Send, reason: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": reason})
        return
    body = json.dumps({"error": reason, "hint": "send 'Authorization: Bearer <API key>'"}).encode()
    # RFC 6750 section 3.1: no error code when the request carried no credentials.
    challenge = 'Bearer realm="rayserve"'
    if reason == "invalid API key":
        challenge += ', error="invalid_token"'
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", challenge.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Middleware]:
    """The callback named by RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH."""
    return [Middleware(ApiKeyMiddleware)]
