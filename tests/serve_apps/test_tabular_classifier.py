"""The tabular classifier: its config, training and artifact, and the deployment in-process."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import joblib
import numpy as np
import pytest
import sklearn
from pydantic import ValidationError
from sklearn.datasets import load_breast_cancer
from starlette.testclient import TestClient

from serve_apps.common import artifacts
from serve_apps.tabular_classifier import app as classifier_app
from serve_apps.tabular_classifier import train
from serve_apps.tabular_classifier.app import (
    ClassifierArgs,
    ClassifierUserConfig,
    ClassifyRequest,
    load_artifact,
)
from tests.serve_apps.helpers import (
    BatchMethodStandIn,
    Served,
    asgi_app,
    error_body,
    fresh_batch_queue,
    set_old_mtime,
)

FEATURE_COUNT = 30


CLASS_NAMES = ["malignant", "benign"]


# --- user_config and builder args --------------------------------------------------------


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


def test_classifier_example_request_is_valid() -> None:
    body = classifier_app.example_request()
    request = ClassifyRequest.model_validate(body)
    assert len(request.instances) == 1
    (instance,) = request.instances
    assert len(instance) == FEATURE_COUNT
    assert set(instance) == set(train.train()["feature_names"])
    assert ClassifyRequest.model_validate_json(json.dumps(body)) == request


# --- the deployment class, in-process -----------------------------------------------------


ClassifierImpl: Any = cast(Any, classifier_app.Classifier).func_or_class


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
