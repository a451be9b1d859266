"""`POST {"texts": [...]}` -> 384-d L2-normalised embeddings from all-MiniLM-L6-v2.

On CPU the model runs on ONNX Runtime (the graph `export_onnx` bakes into the image), on
CUDA on torch; `runtime` picks one explicitly (runtimes.py).

No `from __future__ import annotations` here: Serve reads the builder's parameter
annotation at run time to validate `args` into `EmbeddingArgs` (config.py).
"""

import asyncio
import logging
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from serve_apps.common.batching import BatchingConfig
from serve_apps.common.http import RequestError, read_json_model
from serve_apps.text_embedding.config import EmbeddingArgs
from serve_apps.text_embedding.runtimes import make_encoder

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384

logger = logging.getLogger("ray.serve")


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1)


def _select_device(requested: str) -> str:
    import torch  # noqa: PLC0415 - heavy; only replicas import it

    if requested == "auto":
        # Ray sets CUDA_VISIBLE_DEVICES per replica: a replica without num_gpus sees none.
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _count_texts(batch: list[list[str]]) -> int:
    """The size of a batch for `@serve.batch`: texts, however many requests carry them."""
    return sum(len(texts) for texts in batch)


@serve.deployment
class Embedder:
    def __init__(self, args: EmbeddingArgs) -> None:
        self._args = args
        # `max_batch_size` counts texts, not requests: one model call never takes more.
        self._texts_per_batch = BatchingConfig().max_batch_size
        # Texts per request plus JSON overhead; anything larger is refused unread. A
        # character takes up to 12 bytes in JSON (an escaped surrogate pair, as
        # `json.dumps` writes an emoji), so any request within the limits fits.
        self._max_body_bytes = args.max_texts_per_request * (args.max_text_chars * 12 + 16) + 1024
        self.device = _select_device(args.device)
        self._encoder = make_encoder(args.runtime, self.device, args.intra_op_threads)
        self.runtime = self._encoder.runtime
        dim = self._encoder.dim
        if dim != EMBEDDING_DIM:
            raise RuntimeError(f"{MODEL_NAME} gave {dim}-d embeddings, expected {EMBEDDING_DIM}")
        self._encode(["warm-up"])  # first call pays tokenizer and kernel set-up
        logger.info(
            "Embedder ready: %s runtime on %s, %d intra-op threads",
            self.runtime,
            self.device,
            self._encoder.threads,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        batching = BatchingConfig.model_validate(user_config)
        batching.apply(self.embed_batch)
        self._texts_per_batch = batching.max_batch_size

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._encoder.encode(texts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_count_texts)
    async def embed_batch(self, requests: list[list[str]]) -> list[np.ndarray]:
        """One model call for every text of every request in the batch (at most
        `max_batch_size` texts: a batch of 32-text requests is not 1,024 texts)."""
        flat = [text for texts in requests for text in texts]
        # In a thread, so the replica keeps accepting requests for the next batch.
        vectors = await asyncio.to_thread(self._encode, flat)
        out, start = [], 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    def _check_limits(self, body: EmbedRequest) -> None:
        limit = self._args.max_texts_per_request
        if len(body.texts) > limit:
            raise RequestError(413, f"{len(body.texts)} texts in one request; at most {limit}")
        too_long = [i for i, t in enumerate(body.texts) if len(t) > self._args.max_text_chars]
        if too_long:
            raise RequestError(
                422,
                f"texts longer than {self._args.max_text_chars} characters "
                f"at positions {too_long[:10]}",
            )
        blank = [i for i, t in enumerate(body.texts) if not t.strip()]
        if blank:
            raise RequestError(422, f"empty texts at positions {blank[:10]}")

    async def __call__(self, request: Request) -> Response:
        try:
            body = await read_json_model(request, EmbedRequest, self._max_body_bytes)
            self._check_limits(body)
        except RequestError as exc:
            return exc.response()
        # A request larger than one model batch goes in as several batch items.
        size = self._texts_per_batch
        chunks = [body.texts[i : i + size] for i in range(0, len(body.texts), size)]
        parts = await asyncio.gather(*(self.embed_batch(chunk) for chunk in chunks))
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        payload = {"model": MODEL_NAME, "dim": EMBEDDING_DIM, "embeddings": vectors}
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
        )


def build_app(args: EmbeddingArgs) -> Application:
    """The import path of this app: `serve_apps.text_embedding.app:build_app`."""
    return Embedder.bind(args)  # type: ignore[attr-defined]  # @serve.deployment adds bind


def example_request() -> dict[str, Any]:
    """A request body `make run` shows in its curl line and sends as a smoke test."""
    return {"texts": ["Ray Serve on GKE", "Self-hosted embeddings behind an API key"]}
