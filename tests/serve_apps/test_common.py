"""What every Serve app shares: JSON request parsing, batching knobs, builders, artifacts."""

from __future__ import annotations

import asyncio
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from serve_apps.common import artifacts
from serve_apps.common.batching import BatchingConfig
from serve_apps.common.http import RequestError, read_json_model
from serve_apps.tabular_classifier import app as classifier_app
from serve_apps.tabular_classifier.app import ClassifierArgs
from serve_apps.text_embedding import app as embedding_app
from serve_apps.text_embedding.app import EmbeddingArgs
from tests.serve_apps.helpers import BatchMethodStandIn, error_body

# --- read_json_model behind a tiny app ----------------------------------------------------


MAX_BYTES = 256


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    count: int = Field(ge=0)
    tags: list[int] = []


async def parse_item(request: Request) -> Response:
    try:
        item = await read_json_model(request, Item, MAX_BYTES)
    except RequestError as exc:
        return exc.response()
    return JSONResponse({"parsed": item.model_dump()})


@pytest.fixture(scope="module")
def parse_client() -> Iterator[TestClient]:
    app = Starlette(routes=[Route("/parse", parse_item, methods=["GET", "POST", "PUT"])])
    with TestClient(app) as client:
        yield client


def padded_json(value: Any, size: int) -> bytes:
    """`value` as JSON, padded with trailing whitespace to exactly `size` bytes."""
    raw = json.dumps(value).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "application/merge+json"],
)
def test_parse_valid_body(parse_client: TestClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"name": "widget", "count": 3, "tags": [1, 2]}).encode()
    response = parse_client.post("/parse", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"parsed": {"name": "widget", "count": 3, "tags": [1, 2]}}


def test_parse_body_of_exactly_max_bytes_is_accepted(parse_client: TestClient) -> None:
    body = padded_json({"name": "edge", "count": 0}, MAX_BYTES)
    response = parse_client.post("/parse", content=body)
    assert response.status_code == 200, response.text
    assert response.json()["parsed"]["name"] == "edge"


def test_parse_get_is_405(parse_client: TestClient) -> None:
    body = error_body(parse_client.get("/parse"), 405)
    assert "POST" in body["error"]


def test_parse_put_is_405(parse_client: TestClient) -> None:
    error_body(parse_client.put("/parse", json={"name": "x", "count": 1}), 405)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_parse_non_json_content_type_is_415(parse_client: TestClient, content_type: str) -> None:
    response = parse_client.post(
        "/parse", content=b'{"name": "x", "count": 1}', headers={"content-type": content_type}
    )
    body = error_body(response, 415)
    assert content_type in body["error"]


def test_parse_declared_content_length_over_limit_is_413(parse_client: TestClient) -> None:
    body = padded_json({"name": "big", "count": 1}, MAX_BYTES + 1)
    response = parse_client.post("/parse", content=body)
    assert error_body(response, 413)["error"] == f"request body is larger than {MAX_BYTES} bytes"


def test_parse_chunked_body_over_limit_is_413(parse_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield b"x" * (MAX_BYTES + 1)
        yield b'", "count": 1}'

    request = parse_client.build_request("POST", "/parse", content=chunks())
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    body = error_body(parse_client.send(request), 413)
    assert body["error"] == f"request body is larger than {MAX_BYTES} bytes"


def test_parse_stops_reading_a_stream_once_past_the_limit() -> None:
    # TestClient buffers a streamed upload; a raw ASGI receive shows how much is read.
    received: list[int] = []

    async def receive() -> dict[str, Any]:
        received.append(len(received))
        return {"type": "http.request", "body": b"x" * 64, "more_body": len(received) < 1000}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/parse",
        "headers": [(b"content-type", b"application/json")],
    }

    # A private loop: asyncio.run() would leave this thread without a current loop.
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RequestError) as caught:
            loop.run_until_complete(read_json_model(Request(scope, receive), Item, MAX_BYTES))
    finally:
        loop.close()
    assert caught.value.status == 413
    assert len(received) == MAX_BYTES // 64 + 1  # the first chunk past the limit, no more


def test_parse_chunked_body_under_limit_is_accepted(parse_client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": '
        yield b'"streamed", "count": 2}'

    response = parse_client.post("/parse", content=chunks())
    assert response.status_code == 200, response.text
    assert response.json()["parsed"] == {"name": "streamed", "count": 2, "tags": []}


def test_parse_empty_body_is_400(parse_client: TestClient) -> None:
    body = error_body(parse_client.post("/parse", content=b""), 400)
    assert "empty" in body["error"]


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b'{"name": "a", "count": 1,}', b"\xff\xfe", b"{'name': 'a'}"]
)
def test_parse_invalid_json_is_400(parse_client: TestClient, raw: bytes) -> None:
    body = error_body(parse_client.post("/parse", content=raw), 400)
    assert body["error"] == "request body is not valid JSON"
    assert "details" not in body


def test_parse_schema_errors_are_422_with_location_and_message_only(
    parse_client: TestClient,
) -> None:
    secret = "SECRET-caller-data"
    response = parse_client.post(
        "/parse",
        json={"name": 7, "count": -1, "tags": [1, f"{secret}-1"], "colour": f"{secret}-2"},
    )
    body = error_body(response, 422)
    details = body["details"]
    assert {d["loc"] for d in details} == {"name", "count", "tags.1", "colour"}
    for detail in details:
        assert set(detail) == {"loc", "msg"}
        assert isinstance(detail["msg"], str)
        assert detail["msg"]
    # The caller's input is never echoed back.
    assert secret not in response.text


@pytest.mark.parametrize("value", [[1, 2], "a string", 3, None])
def test_parse_json_that_is_not_an_object_is_422(parse_client: TestClient, value: Any) -> None:
    body = error_body(parse_client.post("/parse", content=json.dumps(value).encode()), 422)
    assert body["details"]


@settings(max_examples=60, deadline=None)
@given(raw=st.one_of(st.binary(max_size=MAX_BYTES + 20), st.text(max_size=80).map(str.encode)))
def test_parse_arbitrary_bytes_never_fail_the_server(parse_client: TestClient, raw: bytes) -> None:
    response = parse_client.post("/parse", content=raw)
    if response.status_code != 200:
        error_body(response, response.status_code)
        assert response.status_code in {400, 413, 422}


# --- batching knobs (user_config) ---------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": 1, "batch_wait_timeout_s": 0},
        {"max_batch_size": 4096, "batch_wait_timeout_s": 10},
    ],
)
def test_batching_config_accepts_its_bounds(config: dict[str, Any]) -> None:
    assert BatchingConfig.model_validate(config).model_dump() == config


@pytest.mark.parametrize(
    "config",
    [
        {"max_batch_size": 0},
        {"max_batch_size": -1},
        {"max_batch_size": 4097},
        {"max_batch_size": 2.5},
        {"max_batch_size": "many"},
        {"batch_wait_timeout_s": -0.001},
        {"batch_wait_timeout_s": 10.5},
        {"max_batch": 8},
        {"max_batch_size": 8, "decision_threshold": 0.3},
    ],
)
def test_batching_config_rejects(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BatchingConfig.model_validate(config)


def test_batching_config_apply_retunes_the_batch_method() -> None:
    method = BatchMethodStandIn()
    BatchingConfig(max_batch_size=8, batch_wait_timeout_s=0.25).apply(method)
    assert method.calls == [("set_max_batch_size", 8), ("set_batch_wait_timeout_s", 0.25)]


def test_batching_config_apply_works_on_a_real_serve_batch_method() -> None:
    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.1)
    async def double(items: list[int]) -> list[int]:
        return [2 * item for item in items]

    BatchingConfig(max_batch_size=64, batch_wait_timeout_s=0.5).apply(double)
    tuned = cast(Any, double)
    assert tuned._get_max_batch_size() == 64
    assert tuned._get_batch_wait_timeout_s() == 0.5


# --- every app's builder, as Serve calls it ----------------------------------------------


@pytest.mark.parametrize(
    ("build_app", "args_model"),
    [
        (embedding_app.build_app, EmbeddingArgs),
        (classifier_app.build_app, ClassifierArgs),
    ],
)
def test_build_app_takes_one_parameter_annotated_with_its_args_model(
    build_app: Callable[..., Application], args_model: type[BaseModel]
) -> None:
    # Serve validates the config's `args` through this annotation: it must be the class
    # itself at run time, not a string (which `from __future__ import annotations` gives).
    parameters = list(inspect.signature(build_app).parameters.values())
    assert len(parameters) == 1
    assert parameters[0].annotation is args_model
    assert typing.get_type_hints(build_app)[parameters[0].name] is args_model


@pytest.mark.parametrize(
    ("build_app", "args"),
    [
        (embedding_app.build_app, EmbeddingArgs(device="cpu")),
        (classifier_app.build_app, ClassifierArgs(max_instances_per_request=10)),
    ],
)
def test_build_app_binds_without_starting_anything(
    build_app: Callable[..., Application], args: BaseModel
) -> None:
    assert isinstance(build_app(args), Application)


# --- where model artifacts live ------------------------------------------------------------


def test_model_dir_env_or_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.MODEL_DIR_ENV, str(tmp_path))
    assert artifacts.model_dir() == tmp_path
    monkeypatch.delenv(artifacts.MODEL_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert artifacts.model_dir() == tmp_path / "home" / ".cache" / "rayserve-gke" / "models"
