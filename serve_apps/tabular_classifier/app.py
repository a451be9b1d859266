"""`POST {"instances": [{feature: value, ...}]}` -> class probabilities, batched.

No `from __future__ import annotations` here: Serve reads the builder's parameter
annotation at run time to validate `args` into `ClassifierArgs` (config.py).
"""

import asyncio
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_apps.common.http import RequestError, read_json_model
from serve_apps.tabular_classifier.config import ClassifierArgs, ClassifierUserConfig

# Strict: a feature is a JSON number, not "1.5" or true; and finite.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[dict[str, FiniteFloat]] = Field(min_length=1)


def load_artifact(path: Path) -> dict[str, Any]:
    import joblib  # noqa: PLC0415
    import sklearn  # noqa: PLC0415

    if not path.is_file():
        raise FileNotFoundError(
            f"no classifier artifact at {path}; run "
            "`python -m serve_apps.tabular_classifier.train` (make run does it for you)"
        )
    artifact: dict[str, Any] = joblib.load(path)  # our own artifact, from our image
    if artifact["sklearn_version"] != sklearn.__version__:
        raise RuntimeError(
            f"{path} was trained with scikit-learn {artifact['sklearn_version']}, this "
            f"replica has {sklearn.__version__}: retrain it (pickles are version-bound)"
        )
    return artifact


@serve.deployment
class Classifier:
    def __init__(self, args: ClassifierArgs) -> None:
        from serve_apps.tabular_classifier.train import artifact_path  # noqa: PLC0415

        self._args = args
        path = Path(args.model_path) if args.model_path else artifact_path()
        artifact = load_artifact(path)
        self._pipeline = artifact["pipeline"]
        self.feature_names: list[str] = artifact["feature_names"]
        self.class_names: list[str] = artifact["class_names"]
        self._features = set(self.feature_names)
        self._threshold = 0.5
        self._max_body_bytes = args.max_instances_per_request * len(self.feature_names) * 64 + 1024

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = ClassifierUserConfig.model_validate(user_config)
        config.apply(self.predict_batch)
        self._threshold = config.decision_threshold

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def predict_batch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        rows = np.concatenate(batches)
        proba = await asyncio.to_thread(self._pipeline.predict_proba, rows)
        return list(np.split(proba, np.cumsum([len(b) for b in batches])[:-1]))

    def _rows(self, body: ClassifyRequest) -> np.ndarray:
        limit = self._args.max_instances_per_request
        if len(body.instances) > limit:
            raise RequestError(
                413, f"{len(body.instances)} instances in one request; at most {limit}"
            )
        for i, instance in enumerate(body.instances):
            missing = sorted(self._features - instance.keys())
            unknown = sorted(instance.keys() - self._features)
            if missing or unknown:
                raise RequestError(
                    422,
                    f"instances[{i}] must have exactly the {len(self.feature_names)} features "
                    "listed by GET on this route",
                    {"missing": missing[:10], "unknown": unknown[:10]},
                )
        return np.array([[inst[f] for f in self.feature_names] for inst in body.instances])

    def _schema(self) -> JSONResponse:
        return JSONResponse(
            {
                "features": self.feature_names,
                "classes": self.class_names,
                "decision_threshold": self._threshold,
            }
        )

    async def __call__(self, request: Request) -> Response:
        if request.method == "GET":
            return self._schema()
        try:
            rows = self._rows(await read_json_model(request, ClassifyRequest, self._max_body_bytes))
        except RequestError as exc:
            return exc.response()
        proba = await self.predict_batch(rows)
        positive = self.class_names[0]  # class 0 (malignant) is what the threshold guards
        predictions = [
            {
                "label": positive if p[0] >= self._threshold else self.class_names[1],
                "probabilities": {
                    name: float(v) for name, v in zip(self.class_names, p, strict=True)
                },
            }
            for p in proba
        ]
        return JSONResponse({"predictions": predictions})


def build_app(args: ClassifierArgs) -> Application:
    """The import path of this app: `serve_apps.tabular_classifier.app:build_app`."""
    return Classifier.bind(args)  # type: ignore[attr-defined]  # @serve.deployment adds bind


def example_request() -> dict[str, Any]:
    """A request body `make run` shows in its curl line and sends as a smoke test."""
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415

    data = load_breast_cancer()
    return {
        "instances": [
            dict(zip(map(str, data.feature_names), map(float, data.data[0]), strict=True))
        ]
    }
