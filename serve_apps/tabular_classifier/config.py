"""What the classifier app accepts from stack config (pydantic only: see
serve_apps/common/app_config.py)."""

from pydantic import BaseModel, ConfigDict, Field

from serve_apps.common.app_config import AppConfig
from serve_apps.common.batching import BatchingConfig


class ClassifierArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(
        None, description="default: the trained artifact in $RAYSERVE_MODEL_DIR"
    )
    max_instances_per_request: int = Field(512, ge=1, le=100_000)


class ClassifierUserConfig(BatchingConfig):
    decision_threshold: float = Field(0.5, gt=0, lt=1)


APP_CONFIG = AppConfig(args=ClassifierArgs, deployments={"Classifier": ClassifierUserConfig})
