"""Ray Serve as its quick-start writes it: one deployment, default options, no batching."""

from typing import Any

from ray import serve
from ray.serve import Application
from starlette.requests import Request

from serve_apps.text_embedding.runtimes import make_encoder


@serve.deployment
class DefaultEmbedder:
    def __init__(self, runtime: str, device: str) -> None:
        self.encoder = make_encoder(runtime, device)

    async def __call__(self, request: Request) -> dict[str, Any]:
        texts = (await request.json())["texts"]
        return {"embeddings": self.encoder.encode(texts).tolist()}


def build_app(args: dict[str, str]) -> Application:
    return DefaultEmbedder.bind(args["runtime"], args["device"])  # type: ignore[attr-defined]
