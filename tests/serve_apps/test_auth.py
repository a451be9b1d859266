"""API-key auth in front of every Ray Serve route: keys, the proxy middleware, the CLI."""

import asyncio
import io
import json
import logging
import os
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from serve_apps.auth import __main__ as cli
from serve_apps.auth import keys, middleware
from serve_apps.auth.keys import KeyFileError, hash_key, match_key, new_key, parse_key_hashes
from serve_apps.auth.middleware import (
    KEYS_FILE_ENV,
    RELOAD_CHECK_INTERVAL_S,
    ApiKeyMiddleware,
    KeyStore,
    proxy_middlewares,
)

# The middleware is tested the way Ray Serve's HTTP proxy uses it: wrapped around an ASGI
# app (here a tiny Starlette app) and called over HTTP through Starlette's TestClient.

# Fixed keys keep the tests deterministic; they look like what `new-key` prints.
KEY_A = "rsk_" + "A" * 43
KEY_B = "rsk_" + "B" * 43
KEY_C = "rsk_" + "C" * 43


# --- the app behind the proxy -------------------------------------------------------------


async def embed(request: Request) -> JSONResponse:
    return JSONResponse(
        {"ok": True, "key_name": request.scope.get("state", {}).get("api_key_name")}
    )


async def healthz(request: Request) -> Response:
    return Response("success", media_type="text/plain")


async def routes(request: Request) -> JSONResponse:
    return JSONResponse({"/embed": "text-embedding"})


async def echo_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_app(extra_middleware: list[Middleware] | None = None) -> Starlette:
    return Starlette(
        routes=[
            Route("/embed", embed, methods=["GET", "POST"]),
            Route("/-/healthz", healthz),
            Route("/-/routes", routes),
            WebSocketRoute("/ws", echo_ws),
        ],
        middleware=extra_middleware,
    )


def write_keys(path: Path, entries: dict[str, str]) -> None:
    """Replace the key file atomically (new inode), as a Kubernetes Secret update does."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries), encoding="utf-8")
    os.replace(tmp, path)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def guarded(keys_file: Path | None, *, check_interval_s: float = 0.0) -> ApiKeyMiddleware:
    """The middleware around the test app; by default it re-checks the file on every request."""
    mw = ApiKeyMiddleware(make_app(), keys_file=str(keys_file) if keys_file else None)
    mw.store._check_interval_s = check_interval_s
    return mw


class HTTPResponse(Protocol):
    """What the tests read from a TestClient response (httpx or httpx2, as starlette picks)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> bytes: ...
    @property
    def text(self) -> str: ...
    def json(self, **kwargs: Any) -> Any: ...


def assert_unauthorized(response: HTTPResponse, error: str | None = None) -> dict[str, str]:
    """A 401 a client can act on: Bearer challenge, JSON reason, nothing internal leaked."""
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'realm="rayserve"' in challenge
    if error == "":  # no credentials sent: RFC 6750 wants no error code
        assert "error=" not in challenge
    elif error is not None:
        assert f'error="{error}"' in challenge
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "Traceback" not in response.text
    body = response.json()
    assert set(body) == {"error", "hint"}
    assert body["error"] in ("missing API key", "invalid API key")
    assert "Bearer" in body["hint"]
    return body


@pytest.fixture(autouse=True)
def _no_keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's shell must not decide which key file a test reads.
    monkeypatch.delenv(KEYS_FILE_ENV, raising=False)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_keys(path, {"team-a": hash_key(KEY_A)})
    return path


@pytest.fixture
def client(keys_file: Path) -> Iterator[TestClient]:
    with TestClient(guarded(keys_file)) as test_client:
        yield test_client


# --- requests with and without a key -----------------------------------------------------


def test_valid_bearer_key_gets_200(client: TestClient) -> None:
    response = client.get("/embed", headers=bearer(KEY_A))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "key_name": "team-a"}


def test_valid_key_on_post_reaches_the_app_with_its_body(client: TestClient) -> None:
    response = client.post("/embed", headers=bearer(KEY_A), json={"text": "hi"})
    assert response.status_code == 200
    assert response.json()["ok"] is True


def test_bearer_scheme_is_case_insensitive_and_token_is_trimmed(client: TestClient) -> None:
    for value in (f"bearer {KEY_A}", f"BEARER {KEY_A}", f"Bearer   {KEY_A}  "):
        response = client.get("/embed", headers={"Authorization": value})
        assert response.status_code == 200, value


def test_no_header_is_401_missing_key(client: TestClient) -> None:
    response = client.get("/embed")
    body = assert_unauthorized(response, error="")
    assert body["error"] == "missing API key"


def test_wrong_key_is_401_invalid_key(client: TestClient) -> None:
    response = client.get("/embed", headers=bearer(KEY_B))
    body = assert_unauthorized(response, error="invalid_token")
    assert body["error"] == "invalid API key"


def test_key_hash_instead_of_key_is_refused(client: TestClient) -> None:
    # Someone who read the stored hash must not be able to use it as the key.
    response = client.get("/embed", headers=bearer(hash_key(KEY_A)))
    assert_unauthorized(response, error="invalid_token")


def test_key_with_extra_characters_is_refused(client: TestClient) -> None:
    for key in (KEY_A + "x", KEY_A[:-1], KEY_A.lower(), f"{KEY_A} {KEY_A}"):
        assert_unauthorized(client.get("/embed", headers=bearer(key)), error="invalid_token")


@pytest.mark.parametrize(
    "value",
    [
        f"Basic {KEY_A}",
        f"Token {KEY_A}",
        KEY_A,
        f"Bearer{KEY_A}",
    ],
    ids=["basic", "token", "bare-key", "no-space"],
)
def test_non_bearer_scheme_is_401(client: TestClient, value: str) -> None:
    response = client.get("/embed", headers={"Authorization": value})
    body = assert_unauthorized(response)
    assert body["error"] == "missing API key"


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer    ", ""], ids=repr)
def test_empty_token_is_401(client: TestClient, value: str) -> None:
    response = client.get("/embed", headers={"Authorization": value})
    body = assert_unauthorized(response, error="")
    assert body["error"] == "missing API key"


def test_key_in_other_places_than_authorization_is_not_accepted(client: TestClient) -> None:
    assert_unauthorized(client.get("/embed", headers={"X-API-Key": KEY_A}))
    assert_unauthorized(client.get("/embed", params={"api_key": KEY_A}))
    assert_unauthorized(client.get("/embed", headers={"Cookie": f"Authorization={KEY_A}"}))


def test_every_non_open_path_is_guarded(client: TestClient) -> None:
    # Routes the app does not know are refused before the app sees them (no 404 probing).
    for path in ("/", "/embed/", "/other", "/-/healthz/x", "/-/other", "/-/healthz/"):
        assert_unauthorized(client.get(path))
    # With a key the app answers as usual.
    assert client.get("/other", headers=bearer(KEY_A)).status_code == 404


def test_401_does_not_call_the_app(keys_file: Path) -> None:
    calls: list[str] = []

    async def app(
        scope: middleware.Scope, receive: middleware.Receive, send: middleware.Send
    ) -> None:
        if scope["type"] == "http":
            calls.append(scope["path"])
        await Response("ok")(scope, receive, send)

    test_client = TestClient(ApiKeyMiddleware(app, keys_file=str(keys_file)))
    assert_unauthorized(test_client.get("/embed"))
    assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_B)))
    assert calls == []
    assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
    assert calls == ["/embed"]


def test_head_and_options_requests_need_a_key_too(client: TestClient) -> None:
    assert client.head("/embed").status_code == 401
    assert client.options("/embed").status_code == 401


# --- open paths ----------------------------------------------------------------------------


def test_healthz_and_routes_are_open_without_a_key(client: TestClient) -> None:
    health = client.get("/-/healthz")
    assert health.status_code == 200
    assert health.text == "success"
    table = client.get("/-/routes")
    assert table.status_code == 200
    assert table.json() == {"/embed": "text-embedding"}


def test_open_paths_stay_open_with_a_wrong_key(client: TestClient) -> None:
    assert client.get("/-/healthz", headers=bearer(KEY_B)).status_code == 200
    assert client.get("/-/routes", headers={"Authorization": "Basic x"}).status_code == 200


def test_open_paths_stay_open_when_no_keys_are_configured(tmp_path: Path) -> None:
    for keys_file in (None, tmp_path / "missing.json"):
        with TestClient(guarded(keys_file)) as test_client:
            assert test_client.get("/-/healthz").status_code == 200
            assert test_client.get("/-/routes").status_code == 200
            assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))


# --- websockets and lifespan ---------------------------------------------------------------


def test_websocket_without_key_is_closed_with_policy_violation(client: TestClient) -> None:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect("/ws"):
        pass
    assert info.value.code == 1008
    assert info.value.reason == "missing API key"


def test_websocket_with_wrong_key_is_closed(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as info,
        client.websocket_connect("/ws", headers=bearer(KEY_B)),
    ):
        pass
    assert info.value.code == 1008
    assert info.value.reason == "invalid API key"


def test_websocket_with_valid_key_connects(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=bearer(KEY_A)) as websocket:
        assert websocket.receive_text() == "hello"


def test_lifespan_passes_through_without_a_key(keys_file: Path) -> None:
    events: list[str] = []

    async def app(
        scope: middleware.Scope, receive: middleware.Receive, send: middleware.Send
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await Response("ok")(scope, receive, send)

    with TestClient(ApiKeyMiddleware(app, keys_file=str(keys_file))) as test_client:
        assert test_client.get("/x", headers=bearer(KEY_A)).status_code == 200
    assert events == ["lifespan.startup", "lifespan.shutdown"]


# --- several keys --------------------------------------------------------------------------


def test_several_named_keys_each_work_and_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys(
        path,
        {
            "team-a": hash_key(KEY_A),
            "team-b": "sha256:" + hash_key(KEY_B),
            "team.c_2026-11": hash_key(KEY_C).upper(),
        },
    )
    with TestClient(guarded(path)) as test_client:
        for key, name in ((KEY_A, "team-a"), (KEY_B, "team-b"), (KEY_C, "team.c_2026-11")):
            response = test_client.get("/embed", headers=bearer(key))
            assert response.status_code == 200
            assert response.json()["key_name"] == name
        assert_unauthorized(test_client.get("/embed", headers=bearer("rsk_other")))


def test_sha256_prefixed_hash_works(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {"prefixed": "sha256:" + hash_key(KEY_B)})
    with TestClient(guarded(path)) as test_client:
        response = test_client.get("/embed", headers=bearer(KEY_B))
        assert response.status_code == 200
        assert response.json()["key_name"] == "prefixed"


# --- rotation without restart --------------------------------------------------------------


def test_rotation_add_then_remove_a_key_without_restart(keys_file: Path) -> None:
    mw = guarded(keys_file)
    with TestClient(mw) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_B)))

        write_keys(keys_file, {"team-a": hash_key(KEY_A), "team-b": hash_key(KEY_B)})
        assert test_client.get("/embed", headers=bearer(KEY_B)).json()["key_name"] == "team-b"
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200

        write_keys(keys_file, {"team-b": hash_key(KEY_B)})
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)), "invalid_token")
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200
    assert set(mw.store.hashes()) == {"team-b"}


def test_rotation_by_rewriting_the_file_in_place(keys_file: Path) -> None:
    # Same inode; the size differs, so the change is seen even within one mtime tick.
    with TestClient(guarded(keys_file)) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        keys_file.write_text(
            json.dumps({"team-a": hash_key(KEY_A), "team-b": hash_key(KEY_B)}), encoding="utf-8"
        )
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200
        keys_file.write_text(json.dumps({"team-b-renamed": hash_key(KEY_B)}), encoding="utf-8")
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 401
        assert test_client.get("/embed", headers=bearer(KEY_B)).json()["key_name"] == (
            "team-b-renamed"
        )


def test_a_same_size_rewrite_with_the_old_mtime_is_noticed(keys_file: Path) -> None:
    """Only the content tells: same inode, same size, the previous mtime put back."""
    with TestClient(guarded(keys_file)) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        before = keys_file.stat()
        keys_file.write_text(json.dumps({"team-a": hash_key(KEY_B)}), encoding="utf-8")
        os.utime(keys_file, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = keys_file.stat()
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_size, before.st_mtime_ns, before.st_ino)  # fmt: skip
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)), "invalid_token")


def test_an_unknown_scope_type_never_reaches_the_app(keys_file: Path) -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: Any) -> None:
        return None

    middleware = ApiKeyMiddleware(app, keys_file=str(keys_file))
    asyncio.run(middleware({"type": "webtransport", "path": "/embed"}, nothing, ignore))
    asyncio.run(middleware({"type": "lifespan"}, nothing, ignore))
    assert reached == ["lifespan"]


def _k8s_secret_volume(root: Path, version: str, entries: dict[str, str]) -> None:
    """Write a Secret volume the way the kubelet does: ..data -> ..<version>/, swapped."""
    data_dir = root / f"..{version}"
    data_dir.mkdir()
    (data_dir / "keys.json").write_text(json.dumps(entries), encoding="utf-8")
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(data_dir.name)
    os.replace(tmp_link, root / "..data")
    visible = root / "keys.json"
    if not visible.is_symlink():
        visible.symlink_to(Path("..data") / "keys.json")


def test_rotation_by_kubernetes_secret_symlink_swap(tmp_path: Path) -> None:
    root = tmp_path / "secret"
    root.mkdir()
    _k8s_secret_volume(root, "v1", {"team-a": hash_key(KEY_A)})
    mounted = root / "keys.json"
    with TestClient(guarded(mounted)) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_B)))

        # Same size as before: only the inode behind the symlinks tells the change.
        _k8s_secret_volume(root, "v2", {"team-b": hash_key(KEY_B)})
        assert mounted.stat().st_size == (root / "..v1" / "keys.json").stat().st_size
        assert test_client.get("/embed", headers=bearer(KEY_B)).json()["key_name"] == "team-b"
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)), "invalid_token")

        _k8s_secret_volume(root, "v3", {"team-a": hash_key(KEY_A), "team-b": hash_key(KEY_B)})
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # Only the middleware module's view of time is faked, not the event loop's.
    monkeypatch.setattr(middleware, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_file_is_rechecked_at_most_once_per_interval(keys_file: Path, clock: FakeClock) -> None:
    assert RELOAD_CHECK_INTERVAL_S == 1.0
    mw = ApiKeyMiddleware(make_app(), keys_file=str(keys_file))
    assert mw.store._check_interval_s == RELOAD_CHECK_INTERVAL_S
    with TestClient(mw) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        write_keys(keys_file, {"team-b": hash_key(KEY_B)})

        clock.now += 0.5  # within the interval: the old keys still hold
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 401

        clock.now += 0.6  # past the interval: the new file is read
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 401


def test_unchanged_content_is_not_parsed_again(
    keys_file: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[Path] = []
    real_parse = middleware.parse_key_file

    def counting_parse(content: bytes, path: Path) -> dict[str, str]:
        parses.append(path)
        return real_parse(content, path)

    monkeypatch.setattr(middleware, "parse_key_file", counting_parse)
    store = KeyStore(keys_file)
    for _ in range(5):
        assert store.hashes() == {"team-a": hash_key(KEY_A)}
        clock.now += 2
    assert parses == [keys_file]


# --- failing closed ------------------------------------------------------------------------

BROKEN_FILES: dict[str, str | bytes | None] = {
    "missing-file": None,
    "invalid-json": '{"team-a": ',
    "empty-file": "",
    "empty-object": "{}",
    "json-list": json.dumps([hash_key(KEY_A)]),
    "json-string": json.dumps(hash_key(KEY_A)),
    "non-hex-hash": json.dumps({"team-a": "z" * 64}),
    "short-hash": json.dumps({"team-a": hash_key(KEY_A)[:-1]}),
    "plain-key-as-value": json.dumps({"team-a": KEY_A}),
    "null-hash": json.dumps({"team-a": None}),
    "number-hash": json.dumps({"team-a": 1}),
    "bad-name": json.dumps({"team a": hash_key(KEY_A)}),
    "empty-name": json.dumps({"": hash_key(KEY_A)}),
    "one-bad-entry-spoils-all": json.dumps({"team-a": hash_key(KEY_A), "team-b": "nope"}),
    "hash-with-trailing-newline": json.dumps({"team-a": hash_key(KEY_A) + "\n"}),
    "name-with-trailing-newline": json.dumps({"team-a\n": hash_key(KEY_A)}),
    "not-utf8": b'{"team-a": "\xff' + hash_key(KEY_A).encode() + b'"}',
}


def _write_broken(path: Path, content: str | bytes | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("content", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_broken_key_file_fails_closed_then_recovers(
    tmp_path: Path, content: str | bytes | None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    _write_broken(path, content)
    with TestClient(guarded(path)) as test_client:
        with caplog.at_level(logging.ERROR, logger="ray.serve"):
            for headers in ({}, bearer(KEY_A), bearer(KEY_B)):
                body = assert_unauthorized(test_client.get("/embed", headers=headers))
                assert str(path) not in json.dumps(body)
        assert "refusing all requests" in caplog.text

        # Fixing the file is enough: no restart.
        write_keys(path, {"team-a": hash_key(KEY_A)})
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 401


@pytest.mark.parametrize("content", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_key_file_breaking_later_revokes_all_keys(
    keys_file: Path, content: str | bytes | None
) -> None:
    with TestClient(guarded(keys_file)) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        _write_broken(keys_file, content)
        # Twice: a failed reload must not leave the old keys in force afterwards.
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))


def test_key_file_that_is_a_directory_fails_closed(tmp_path: Path) -> None:
    with TestClient(guarded(tmp_path)) as test_client:
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))


def test_env_var_unset_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    mw = ApiKeyMiddleware(make_app())
    assert mw.store.path is None
    with TestClient(mw) as test_client, caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))
        assert_unauthorized(test_client.get("/embed"))
    assert f"{KEYS_FILE_ENV} is not set" in caplog.text


def test_env_var_empty_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_FILE_ENV, "")
    mw = ApiKeyMiddleware(make_app())
    assert mw.store.path is None
    with TestClient(mw) as test_client:
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))


def test_missing_file_named_by_env_var_recovers_when_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "later.json"
    monkeypatch.setenv(KEYS_FILE_ENV, str(path))
    mw = ApiKeyMiddleware(make_app())
    mw.store._check_interval_s = 0
    with TestClient(mw) as test_client:
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))
        write_keys(path, {"team-a": hash_key(KEY_A)})
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200


def test_keys_file_argument_wins_over_env_var(
    keys_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.json"
    write_keys(other, {"team-b": hash_key(KEY_B)})
    monkeypatch.setenv(KEYS_FILE_ENV, str(other))
    with TestClient(ApiKeyMiddleware(make_app())) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 401
    with TestClient(ApiKeyMiddleware(make_app(), keys_file=str(keys_file))) as test_client:
        assert test_client.get("/embed", headers=bearer(KEY_A)).status_code == 200
        assert test_client.get("/embed", headers=bearer(KEY_B)).status_code == 401


def test_key_file_errors_are_logged_once_per_distinct_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path, check_interval_s=0)
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        for _ in range(3):
            assert store.hashes() == {}
        path.write_text("{}", encoding="utf-8")
        for _ in range(3):
            assert store.hashes() == {}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "cannot read" in errors[0].getMessage()
    assert "non-empty JSON object" in errors[1].getMessage()


def test_loaded_keys_are_logged_by_name_never_by_hash(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        KeyStore(keys_file).hashes()
    assert "team-a" in caplog.text
    assert hash_key(KEY_A) not in caplog.text
    assert KEY_A not in caplog.text


# --- keys.py -------------------------------------------------------------------------------


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(KEY_A))
    assert hash_key("ключ") == hash_key("ключ") != hash_key("kljuch")


def test_new_key_is_prefixed_random_and_url_safe() -> None:
    generated = [new_key() for _ in range(50)]
    assert len(set(generated)) == len(generated)
    for key in generated:
        assert key.startswith("rsk_")
        assert key.startswith(keys.KEY_PREFIX)
        # 32 random bytes in unpadded urlsafe base64 are 43 characters.
        assert re.fullmatch(r"rsk_[A-Za-z0-9_-]{43}", key)


def test_match_key_returns_the_matching_name_or_none() -> None:
    hashes = {"team-a": hash_key(KEY_A), "team-b": hash_key(KEY_B)}
    assert match_key(KEY_A, hashes) == "team-a"
    assert match_key(KEY_B, hashes) == "team-b"
    assert match_key(KEY_C, hashes) is None
    assert match_key("", hashes) is None
    assert match_key(hash_key(KEY_A), hashes) is None
    assert match_key(KEY_A, {}) is None


def test_match_key_with_parsed_prefixed_and_uppercase_hashes() -> None:
    hashes = parse_key_hashes(
        {"a": "sha256:" + hash_key(KEY_A), "b": hash_key(KEY_B).upper(), "c": hash_key(KEY_C)}
    )
    assert hashes == {"a": hash_key(KEY_A), "b": hash_key(KEY_B), "c": hash_key(KEY_C)}
    assert [match_key(k, hashes) for k in (KEY_A, KEY_B, KEY_C, "x")] == ["a", "b", "c", None]


@given(st.text(max_size=64), st.text(max_size=64))
@settings(max_examples=100, deadline=None)
def test_match_key_finds_exactly_the_stored_key(stored: str, presented: str) -> None:
    hashes = {"k": hash_key(stored)}
    assert match_key(stored, hashes) == "k"
    assert (match_key(presented, hashes) == "k") == (presented == stored)


@pytest.mark.parametrize("name", BROKEN_FILES.keys())
def test_read_key_file_raises_key_file_error_only(tmp_path: Path, name: str) -> None:
    path = tmp_path / "keys.json"
    _write_broken(path, BROKEN_FILES[name])
    with pytest.raises(KeyFileError):
        keys.read_key_file(path)


def test_read_key_file_reads_a_valid_file(keys_file: Path) -> None:
    assert keys.read_key_file(keys_file) == {"team-a": hash_key(KEY_A)}


# --- the CLI -------------------------------------------------------------------------------


def _parse_new_key_output(out: str) -> tuple[str, dict[str, str]]:
    key_line, hash_line = out.strip().splitlines()
    key = key_line.rsplit(": ", 1)[1]
    entry = json.loads(hash_line.split(": ", 1)[1])
    return key, entry


def test_cli_new_key_prints_a_key_and_its_hash_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["new-key", "team-search-2026-11"]) == 0
    out = capsys.readouterr().out
    key, entry = _parse_new_key_output(out)
    assert key.startswith("rsk_")
    assert entry == {"team-search-2026-11": hash_key(key)}
    # The entry is what the key file stores: the middleware accepts the printed key.
    hashes = parse_key_hashes(entry)
    assert match_key(key, hashes) == "team-search-2026-11"


def test_cli_new_key_output_works_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries: dict[str, str] = {}
    issued: dict[str, str] = {}
    for name in ("alpha", "beta"):
        cli.main(["new-key", name])
        key, entry = _parse_new_key_output(capsys.readouterr().out)
        entries.update(entry)
        issued[name] = key
    assert issued["alpha"] != issued["beta"]
    path = tmp_path / "keys.json"
    write_keys(path, entries)
    with TestClient(guarded(path)) as test_client:
        for name, key in issued.items():
            assert test_client.get("/embed", headers=bearer(key)).json()["key_name"] == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "_underscore-first",
        ".dot-first",
        "has space",
        "slash/name",
        "x" * 64,
        "tab\tname",
        "nl\n",
    ],
)
def test_cli_new_key_rejects_an_invalid_name(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["new-key", name])
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert "rsk_" not in captured.out
    assert "name must match" in captured.err


def test_cli_new_key_accepts_the_longest_valid_name(capsys: pytest.CaptureFixture[str]) -> None:
    name = "a" * 63
    assert cli.main(["new-key", name]) == 0
    _, entry = _parse_new_key_output(capsys.readouterr().out)
    assert list(entry) == [name]


def test_cli_new_key_needs_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["new-key"])
    assert info.value.code not in (0, None)
    assert "name" in capsys.readouterr().err


def test_cli_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code not in (0, None)
    with pytest.raises(SystemExit) as info:
        cli.main(["rotate"])
    assert info.value.code not in (0, None)


def test_cli_hash_reads_a_key_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"  {KEY_A}\n"))
    assert cli.main(["hash"]) == 0
    assert capsys.readouterr().out == hash_key(KEY_A) + "\n"


def test_cli_hash_reads_only_the_first_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{KEY_B}\n{KEY_A}\n"))
    assert cli.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_key(KEY_B)


@pytest.mark.parametrize("stdin", ["", "\n", "   \n"], ids=["eof", "blank", "spaces"])
def test_cli_hash_without_a_key_is_an_error(
    stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as info:
        cli.main(["hash"])
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no key on stdin" in captured.err


# --- the proxy callback --------------------------------------------------------------------


def test_proxy_middlewares_is_one_api_key_middleware() -> None:
    result = proxy_middlewares()
    assert isinstance(result, list)
    assert len(result) == 1
    assert isinstance(result[0], Middleware)
    assert result[0].cls is ApiKeyMiddleware
    assert result[0].args == ()
    assert result[0].kwargs == {}


def test_proxy_middlewares_guard_an_app_as_ray_serve_installs_them(
    keys_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEYS_FILE_ENV, str(keys_file))
    with TestClient(make_app(proxy_middlewares())) as test_client:
        assert test_client.get("/-/healthz").status_code == 200
        assert test_client.get("/-/routes").status_code == 200
        assert_unauthorized(test_client.get("/embed"))
        response = test_client.get("/embed", headers=bearer(KEY_A))
        assert response.status_code == 200
        assert response.json() == {"ok": True, "key_name": "team-a"}


def test_proxy_middlewares_without_env_var_fail_closed() -> None:
    with TestClient(make_app(proxy_middlewares())) as test_client:
        assert test_client.get("/-/healthz").status_code == 200
        assert_unauthorized(test_client.get("/embed", headers=bearer(KEY_A)))
