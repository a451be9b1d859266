"""What the API-key middleware adds to one request, measured on its own.

The proxy's middleware runs the same code for every request; timing it around a no-op
ASGI app isolates its cost from the run-to-run noise of a whole HTTP benchmark (a 3 %
difference in p50 is below that noise on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from serve_apps.auth.keys import hash_key, new_key
from serve_apps.auth.middleware import ApiKeyMiddleware


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _time_calls(app: Any, scope: dict[str, Any], calls: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    start = time.perf_counter()
    for _ in range(calls):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - start) / calls


def auth_cost_us(calls: int = 20_000) -> dict[str, float]:
    """Microseconds per request: the bare app, and the app behind the middleware."""
    key = new_key()
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys.json"
        # Ten keys, the right one last: the lookup pays for a realistic key file.
        hashes = {f"team-{i}": hash_key(new_key()) for i in range(9)} | {"bench": hash_key(key)}
        keys_file.write_text(json.dumps(hashes))
        scope = {
            "type": "http",
            "path": "/embed",
            "method": "POST",
            "headers": [
                (b"host", b"127.0.0.1:8000"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {key}".encode()),
            ],
        }
        guarded = ApiKeyMiddleware(_noop_app, keys_file=str(keys_file))

        async def both() -> tuple[float, float]:
            await _time_calls(guarded, scope, 100)  # first call reads the key file
            return (
                await _time_calls(_noop_app, scope, calls),
                await _time_calls(guarded, scope, calls),
            )

        bare, with_auth = asyncio.run(both())
    return {
        "bare_us": bare * 1e6,
        "with_auth_us": with_auth * 1e6,
        "auth_us": (with_auth - bare) * 1e6,
    }
