"""The model artifacts `make run` builds before it starts the stack's apps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from infra.config import PROJECT_ROOT, StackConfig
from infra.config.sources import load_stack_file
from localrun import artifacts as artifacts_module
from localrun.artifacts import artifact_builders, prepare_artifacts
from serve_apps.common.artifacts import ARTIFACT_BUILDERS
from serve_apps.text_embedding.runtimes import ONNX_DIR_NAME


def _stack_of(stack_name: str, service_name: str) -> StackConfig:
    stack = load_stack_file(stack_name)
    (service,) = [s for s in stack.services if s.name == service_name]
    return stack.model_copy(update={"services": [service]})


def test_artifact_builders_are_every_builder_module_of_the_stacks_apps() -> None:
    assert ARTIFACT_BUILDERS == ("train", "export_onnx")
    assert artifact_builders(load_stack_file("dev")) == [
        "serve_apps.tabular_classifier.train",
        "serve_apps.text_embedding.export_onnx",
    ]
    assert artifact_builders(_stack_of("prod", "embeddings")) == [
        "serve_apps.text_embedding.export_onnx"
    ]
    assert artifact_builders(_stack_of("prod", "classifier")) == [
        "serve_apps.tabular_classifier.train"
    ]


def test_prepare_artifacts_runs_each_builder_if_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def record(command: list[str], **kwargs: object) -> None:
        assert kwargs == {"check": True, "cwd": PROJECT_ROOT}
        commands.append(command)

    monkeypatch.setattr(artifacts_module.subprocess, "run", record)
    said: list[str] = []
    prepare_artifacts(_stack_of("prod", "embeddings"), tmp_path, say=said.append)
    assert commands == [
        [
            sys.executable, "-m", "serve_apps.text_embedding.export_onnx",
            "--if-missing", "--model-dir", str(tmp_path),
        ]
    ]  # fmt: skip
    assert said == ["==> model artifact: serve_apps.text_embedding.export_onnx"]


@pytest.mark.slow
def test_prepare_artifacts_exports_the_embedding_model_once(tmp_path: Path) -> None:
    # For real: the subprocess `make run` starts, into a fresh model dir, then again.
    said: list[str] = []
    stack = _stack_of("prod", "embeddings")
    prepare_artifacts(stack, tmp_path, say=said.append)
    export = tmp_path / ONNX_DIR_NAME
    assert {p.name for p in export.iterdir()} == {"model.onnx", "tokenizer.json", "export.json"}
    assert [p.name for p in tmp_path.iterdir()] == [ONNX_DIR_NAME]  # no temporary left
    meta = json.loads((export / "export.json").read_text(encoding="utf-8"))
    assert meta["check"]["min_cosine"] >= 0.999
    before = (export / "model.onnx").stat().st_mtime_ns

    prepare_artifacts(stack, tmp_path, say=said.append)  # --if-missing: kept as it is
    assert (export / "model.onnx").stat().st_mtime_ns == before
