"""What the embedding app accepts from stack config (pydantic only: see
serve_apps/common/app_config.py)."""

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_apps.common.app_config import AppConfig
from serve_apps.common.batching import BatchingConfig


class EmbeddingArgs(BaseModel):
    """Builder args: fixed for the life of a deployment."""

    model_config = ConfigDict(extra="forbid")

    max_texts_per_request: int = Field(256, ge=1, le=4096)
    max_text_chars: int = Field(2000, ge=1, le=100_000)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: ONNX Runtime on CPU (the graph export_onnx baked into the image), torch on CUDA.
    runtime: Literal["auto", "torch", "onnx"] = "auto"
    # None: the replica's share of the CPUs (OMP_NUM_THREADS, which Ray sets per actor).
    intra_op_threads: int | None = Field(None, ge=1, le=256)

    @model_validator(mode="after")
    def _onnx_runs_on_cpu(self) -> Self:
        if self.runtime == "onnx" and self.device == "cuda":
            raise ValueError(
                "runtime 'onnx' runs on CPU only (the image ships the CPU onnxruntime); "
                "use runtime 'torch' or 'auto' with device 'cuda'"
            )
        return self


APP_CONFIG = AppConfig(args=EmbeddingArgs, deployments={"Embedder": BatchingConfig})
