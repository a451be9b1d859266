"""A real HTTP/1.1 server on loopback whose answers each test scripts."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    peer_port: int


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON (dict/list), or str for a plain-text body
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering


Handler = Callable[[Seen], Reply]


def embed_echo(seen: Seen) -> Reply:
    """Like /embed: one vector per text, here the text's number, so order is checkable."""
    texts = seen.body["texts"]
    vectors = [[float(t)] for t in texts]
    return Reply(body={"model": "echo", "dim": 1, "embeddings": vectors})


class ScriptedServer:
    def __init__(self, port: int = 0) -> None:
        self.seen: list[Seen] = []
        self.handler: Handler = lambda seen: Reply(body={})
        self._lock = threading.Lock()
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: connections can be reused

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                seen = Seen(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                    time.monotonic(),
                    self.client_address[1],
                )
                with outer._lock:
                    outer.seen.append(seen)
                reply = outer.handler(seen)
                time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                is_text = isinstance(reply.body, str)
                payload = (reply.body if is_text else json.dumps(reply.body)).encode()
                self.send_response(reply.status)
                content_type = "text/plain" if is_text else "application/json"
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.end_headers()  # the client may have given up (a timeout test)
                    self.wfile.write(payload)

            do_GET = do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def script(self, *replies: Reply, then: Handler | None = None) -> None:
        """Answer with `replies` in turn, then with `then` (default: the last reply)."""
        queue = list(replies)
        fallback = then or (lambda seen: replies[-1])

        def handler(seen: Seen) -> Reply:
            with self._lock:
                return queue.pop(0) if queue else fallback(seen)

        self.handler = handler

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests' arrivals."""
        return [b.at - a.at for a, b in zip(self.seen, self.seen[1:], strict=False)]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    try:
        yield scripted
    finally:
        scripted.close()
