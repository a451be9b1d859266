"""What the Serve app tests share: error bodies, batch stand-ins, replicas behind a TestClient."""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

# The deployment classes (the raw classes under `@serve.deployment`) are called the way
# a replica calls them, through Starlette's TestClient: no Ray cluster, no HTTP server.
# `@serve.batch` works outside a replica once `serve.get_replica_context` is stood in
# for (the `replica_context` fixture); each app gets one TestClient (one event loop) for
# its whole module, because a batch queue is bound to the loop it started on. The same
# apps behind a real Ray cluster are tested in tests/integration/.


def error_body(response: Any, status: int) -> dict[str, Any]:
    """Assert a client error came back as `{"error": reason, maybe "details"}` JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) <= {"error", "details"}
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


class BatchMethodStandIn:
    """Records what `BatchingConfig.apply` asks of a `@serve.batch` method."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def set_max_batch_size(self, value: int) -> None:
        self.calls.append(("set_max_batch_size", value))

    def set_batch_wait_timeout_s(self, value: float) -> None:
        self.calls.append(("set_batch_wait_timeout_s", value))


def set_old_mtime(path: Path) -> int:
    old = 1_000_000_000
    os.utime(path, (old, old))
    return path.stat().st_mtime_ns


@dataclass
class Served:
    """A deployment class's instance(s) behind one TestClient (one event loop)."""

    client: TestClient
    replica: Any
    limited: Any = None

    def run(self, make_coroutine: Callable[[], typing.Awaitable[Any]]) -> Any:
        """Run a coroutine on the loop the app's requests (and batch queue) run on."""
        portal = self.client.portal
        assert portal is not None

        async def call() -> Any:
            return await make_coroutine()

        return portal.call(call)


def fresh_batch_queue(batch_method: Any) -> Callable[[], None]:
    """Start the method's batch queue anew (on the next loop); return the restorer."""
    lazy = batch_method.set_max_batch_size.__self__  # the _LazyBatchQueueWrapper
    size, timeout = lazy.max_batch_size, lazy.batch_wait_timeout_s
    lazy._queue = None

    def restore() -> None:
        lazy._queue = None  # bound to a loop that is about to close
        lazy.max_batch_size, lazy.batch_wait_timeout_s = size, timeout

    return restore


def asgi_app(routes: dict[str, Any]) -> Starlette:
    def endpoint(replica: Any) -> Callable[[Request], typing.Awaitable[Response]]:
        async def call(request: Request) -> Response:
            return cast(Response, await replica(request))

        return call

    return Starlette(
        routes=[
            Route(path, endpoint(replica), methods=["GET", "POST"])
            for path, replica in routes.items()
        ]
    )
