"""`deploy` resends the (declarative) config when the dashboard closes a connection
without answering, and still reports a refusal at once."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from localrun import serve_client
from localrun.processes import LocalRunError


class _Dashboard(http.server.BaseHTTPRequestHandler):
    drops = 0
    puts: ClassVar[list[dict[str, object]]] = []
    status = 200

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # the client's version check
        body = json.dumps({"ray_version": "2.60.0", "version": "4"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        payload = json.loads(self.rfile.read(length))
        if type(self).drops > 0:
            type(self).drops -= 1
            self.close_connection = True
            self.connection.close()  # closed without an answer
            return
        type(self).puts.append(payload)
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def dashboard() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Dashboard.puts, _Dashboard.drops, _Dashboard.status = [], 0, 200
    serve_client._client.cache_clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_dropped_connection_is_retried(dashboard: str) -> None:
    _Dashboard.drops = 1
    serve_client.deploy(dashboard, {"applications": []})
    assert _Dashboard.puts == [{"applications": []}]


def test_a_refusal_is_reported_once(dashboard: str) -> None:
    _Dashboard.status = 400
    with pytest.raises(LocalRunError, match="Serve rejected the config"):
        serve_client.deploy(dashboard, {"applications": []})
    assert len(_Dashboard.puts) == 1
