"""Plain FastAPI + uvicorn: a sync endpoint (FastAPI runs it in its thread pool)."""

import os

from fastapi import FastAPI
from pydantic import BaseModel

from serve_apps.text_embedding.runtimes import make_encoder

encoder = make_encoder(os.environ["BENCH_RUNTIME"], os.environ["BENCH_DEVICE"])
app = FastAPI()


class EmbedRequest(BaseModel):
    texts: list[str]


@app.post("/embed")
def embed(body: EmbedRequest) -> dict[str, list[list[float]]]:
    return {"embeddings": encoder.encode(body.texts).tolist()}
