"""The batching knobs every batched app takes through `user_config` at run time."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class BatchingConfig(BaseModel):
    """`user_config` keys of a batched deployment; changing them needs no restart."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=4096)
    batch_wait_timeout_s: float = Field(0.005, ge=0, le=10)

    def apply(self, batch_method: Any) -> None:
        """Retune a `@serve.batch` method of a live replica."""
        batch_method.set_max_batch_size(self.max_batch_size)
        batch_method.set_batch_wait_timeout_s(self.batch_wait_timeout_s)
