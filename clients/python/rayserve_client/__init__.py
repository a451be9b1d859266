"""Clients for the rayserve-gke Serve apps (`POST /embed`, `POST /classify`).

    from rayserve_client import Client

    with Client("http://127.0.0.1:8000") as client:  # key from $RAYSERVE_API_KEY
        vectors = client.embed(["Ray Serve on GKE"]).vectors

The apps' routes are pure functions of the request body, so every call (POSTs too) is
retried on overload (429/503), a gateway without a healthy replica (502/504), a 500
from Serve, connection errors and timeouts, with exponential backoff and jitter
(`RetryPolicy`); other 4xx never are.
"""

from rayserve_client.client import API_KEY_ENV, URL_ENV, AsyncClient, Client
from rayserve_client.errors import (
    ApiError,
    AuthenticationError,
    RayServeError,
    ResponseFormatError,
    UnreachableError,
)
from rayserve_client.results import ClassifierSchema, Embeddings, Prediction
from rayserve_client.retry import RETRY_STATUSES, RetryEvent, RetryPolicy, parse_retry_after

__all__ = [
    "API_KEY_ENV",
    "RETRY_STATUSES",
    "URL_ENV",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "ClassifierSchema",
    "Client",
    "Embeddings",
    "Prediction",
    "RayServeError",
    "ResponseFormatError",
    "RetryEvent",
    "RetryPolicy",
    "UnreachableError",
    "parse_retry_after",
]
