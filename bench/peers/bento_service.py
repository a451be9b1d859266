"""BentoML 1.4 with adaptive batching, as its docs write an embedding service."""

import os

import bentoml

from serve_apps.text_embedding.runtimes import make_encoder


@bentoml.service(traffic={"timeout": 60})
class BentoEmbedder:
    def __init__(self) -> None:
        self.encoder = make_encoder(os.environ["BENCH_RUNTIME"], os.environ["BENCH_DEVICE"])

    # Requests' `texts` lists are concatenated into one batch along dimension 0.
    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.encoder.encode(texts).tolist()
