"""Typed results of the apps' routes, read from their JSON answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rayserve_client.errors import ResponseFormatError


@dataclass(frozen=True)
class Embeddings:
    """`POST /embed`: one L2-normalised vector per text, in the order of the texts."""

    model: str
    dim: int
    vectors: list[list[float]]

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def from_json(cls, body: Any) -> Embeddings:
        try:
            return cls(str(body["model"]), int(body["dim"]), list(body["embeddings"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseFormatError(f"not an /embed answer: {exc!r}") from None


@dataclass(frozen=True)
class Prediction:
    """`POST /classify`: the label and every class's probability for one instance."""

    label: str
    probabilities: dict[str, float]

    @classmethod
    def list_from_json(cls, body: Any) -> list[Prediction]:
        try:
            return [
                cls(str(p["label"]), {str(k): float(v) for k, v in p["probabilities"].items()})
                for p in body["predictions"]
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ResponseFormatError(f"not a /classify answer: {exc!r}") from None


@dataclass(frozen=True)
class ClassifierSchema:
    """`GET /classify`: the features every instance must carry, and the classes."""

    features: list[str]
    classes: list[str]
    decision_threshold: float

    @classmethod
    def from_json(cls, body: Any) -> ClassifierSchema:
        try:
            return cls(
                [str(f) for f in body["features"]],
                [str(c) for c in body["classes"]],
                float(body["decision_threshold"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseFormatError(f"not a GET /classify answer: {exc!r}") from None
