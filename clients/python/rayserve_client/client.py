"""`Client` (sync) and `AsyncClient`: the apps' routes over one pooled HTTP connection
set, with the API key, timeouts and retries (see `RetryPolicy`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from rayserve_client.errors import ApiError, RayServeError, UnreachableError
from rayserve_client.results import ClassifierSchema, Embeddings, Prediction
from rayserve_client.retry import Attempts, RetryEvent, RetryPolicy, parse_retry_after

API_KEY_ENV = "RAYSERVE_API_KEY"
URL_ENV = "RAYSERVE_URL"
# The apps' per-request limits in both stacks (`max_texts_per_request`,
# `max_instances_per_request` in Pulumi.<stack>.yaml; prod allows 1024 instances).
EMBED_BATCH_SIZE = 256
CLASSIFY_BATCH_SIZE = 512
# No answer at all, or a connection the server dropped: worth another attempt.
RETRYABLE_TRANSPORT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

logger = logging.getLogger("rayserve_client")
T = TypeVar("T")


class _Base:
    """What both clients share: settings, headers, and the decision after each attempt."""

    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        *,
        retry: RetryPolicy | None,
        timeout_s: float,
        embed_path: str,
        classify_path: str,
        embed_batch_size: int,
        classify_batch_size: int,
        on_retry: Callable[[RetryEvent], None] | None,
    ) -> None:
        url = base_url or os.environ.get(URL_ENV)
        if not url:
            raise ValueError(f"no service URL: pass base_url or set {URL_ENV}")
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise ValueError(f"no API key: pass api_key or set {API_KEY_ENV}")
        if embed_batch_size < 1 or classify_batch_size < 1:
            raise ValueError("batch sizes must be at least 1")
        self.base_url = url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self.embed_path = embed_path
        self.classify_path = classify_path
        self.embed_batch_size = embed_batch_size
        self.classify_batch_size = classify_batch_size
        self.on_retry = on_retry
        self._headers = {"Authorization": f"Bearer {key}", "User-Agent": "rayserve-client/0.1"}
        self._answered: set[str] = set()  # paths that have answered 2xx

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))

    def _succeeded(self, path: str, response: httpx.Response) -> Any:
        self._answered.add(path)
        return _json(response)

    def _delay_after(
        self,
        attempts: Attempts,
        outcome: httpx.Response | httpx.TransportError,
        method: str,
        path: str,
    ) -> float:
        """The wait before the next attempt, or the error to raise instead."""
        error: RayServeError
        url = f"{self.base_url}{path}"
        if isinstance(outcome, httpx.Response):
            retry_after = parse_retry_after(outcome.headers.get("retry-after"))
            api_error = ApiError.from_response(outcome, attempts.made, retry_after)
            error, status = api_error, outcome.status_code
            words = f"{status} {api_error.reason}"
            retryable = status in self.retry.retry_statuses or (
                status == 404 and self.retry.retry_lost_routes and path in self._answered
            )
        else:
            retry_after, status = None, None
            words = f"{type(outcome).__name__}: {outcome}".rstrip(": ")
            error = UnreachableError(words, method=method, url=url, attempts=attempts.made)
            error.__cause__ = outcome
            retryable = self.retry.retry_transport_errors and isinstance(
                outcome, RETRYABLE_TRANSPORT_ERRORS
            )
        delay = attempts.delay_s(retry_after) if retryable else None
        if delay is None:
            raise error
        event = RetryEvent(attempts.made, delay, status, words, retry_after)
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            f"{method} {url}", event.attempt, words[:200], delay,
        )  # fmt: skip
        if self.on_retry is not None:
            self.on_retry(event)
        return delay

    def _attempts(self) -> Attempts:
        return Attempts(self.retry)


def _body(payload: Any) -> bytes | None:
    return None if payload is None else json.dumps(payload).encode()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RayServeError(
            f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"but the body is not JSON: {response.text[:200]!r}"
        ) from None


def _batches(items: Sequence[T], size: int, what: str) -> list[list[T]]:
    if isinstance(items, str | bytes):
        raise TypeError(f"{what} must be a list, not a single {type(items).__name__}")
    items = list(items)
    if not items:
        raise ValueError(f"no {what}: the service needs at least one")
    return [items[i : i + size] for i in range(0, len(items), size)]


def _joined(parts: list[Embeddings]) -> Embeddings:
    return Embeddings(parts[0].model, parts[0].dim, [v for part in parts for v in part.vectors])


class Client(_Base):
    """A synchronous client; reuse one (it keeps connections open), and close it.

    `base_url` and `api_key` default to $RAYSERVE_URL and $RAYSERVE_API_KEY. Every call
    is retried per `retry` (429, 500, 502, 503, 504, connection errors, timeouts, a 404
    from a route that has answered before): safe, since the apps' POSTs are pure
    functions of their bodies. `timeout_s` bounds each attempt, `retry.deadline_s` the
    whole call.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        embed_path: str = "/embed",
        classify_path: str = "/classify",
        embed_batch_size: int = EMBED_BATCH_SIZE,
        classify_batch_size: int = CLASSIFY_BATCH_SIZE,
        on_retry: Callable[[RetryEvent], None] | None = None,
        max_connections: int = 10,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, retry=retry, timeout_s=timeout_s, embed_path=embed_path,
            classify_path=classify_path, embed_batch_size=embed_batch_size,
            classify_batch_size=classify_batch_size, on_retry=on_retry,
        )  # fmt: skip
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=self._timeout(),
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )

    def request_json(self, method: str, path: str, payload: Any = None) -> Any:
        """One call to any route: JSON in, JSON out, retried per the policy."""
        attempts, content = self._attempts(), _body(payload)
        headers = {"Content-Type": "application/json"} if content is not None else None
        while True:
            timeout = attempts.start(self.timeout_s)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.request(
                    method, path, content=content, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return self._succeeded(path, outcome)
            time.sleep(self._delay_after(attempts, outcome, method, path))

    def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> Embeddings:
        """Embeddings of `texts`, in order, in requests of at most `batch_size` texts."""
        size = batch_size or self.embed_batch_size
        parts = [
            Embeddings.from_json(self.request_json("POST", self.embed_path, {"texts": batch}))
            for batch in _batches(texts, size, "texts")
        ]
        return _joined(parts)

    def classify(
        self, instances: Sequence[Mapping[str, float]], *, batch_size: int | None = None
    ) -> list[Prediction]:
        """One prediction per instance (a mapping of every feature to its value), in order."""
        size = batch_size or self.classify_batch_size
        path = self.classify_path
        return [
            prediction
            for batch in _batches(instances, size, "instances")
            for prediction in Prediction.list_from_json(
                self.request_json("POST", path, {"instances": [dict(i) for i in batch]})
            )
        ]

    def classifier_schema(self) -> ClassifierSchema:
        """The features an instance must have, the classes, the decision threshold."""
        return ClassifierSchema.from_json(self.request_json("GET", self.classify_path))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio twin of `Client` (same arguments, `await` every call, `aclose()`).

    `embed` and `classify` send up to `max_concurrency` batches at once.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        embed_path: str = "/embed",
        classify_path: str = "/classify",
        embed_batch_size: int = EMBED_BATCH_SIZE,
        classify_batch_size: int = CLASSIFY_BATCH_SIZE,
        on_retry: Callable[[RetryEvent], None] | None = None,
        max_connections: int = 10,
        max_concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key, retry=retry, timeout_s=timeout_s, embed_path=embed_path,
            classify_path=classify_path, embed_batch_size=embed_batch_size,
            classify_batch_size=classify_batch_size, on_retry=on_retry,
        )  # fmt: skip
        self.max_concurrency = max_concurrency
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=self._timeout(),
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
        )

    async def request_json(self, method: str, path: str, payload: Any = None) -> Any:
        """One call to any route: JSON in, JSON out, retried per the policy."""
        attempts, content = self._attempts(), _body(payload)
        headers = {"Content-Type": "application/json"} if content is not None else None
        while True:
            timeout = attempts.start(self.timeout_s)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.request(
                    method, path, content=content, headers=headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                outcome = exc
            else:
                if outcome.is_success:
                    return self._succeeded(path, outcome)
            await asyncio.sleep(self._delay_after(attempts, outcome, method, path))

    async def _posts(self, path: str, key: str, batches: list[list[Any]]) -> list[Any]:
        gate = asyncio.Semaphore(self.max_concurrency)

        async def post(batch: list[Any]) -> Any:
            async with gate:
                return await self.request_json("POST", path, {key: batch})

        return list(await asyncio.gather(*(post(batch) for batch in batches)))

    async def embed(self, texts: Sequence[str], *, batch_size: int | None = None) -> Embeddings:
        """Embeddings of `texts`, in order, in requests of at most `batch_size` texts."""
        batches = _batches(texts, batch_size or self.embed_batch_size, "texts")
        bodies = await self._posts(self.embed_path, "texts", batches)
        return _joined([Embeddings.from_json(body) for body in bodies])

    async def classify(
        self, instances: Sequence[Mapping[str, float]], *, batch_size: int | None = None
    ) -> list[Prediction]:
        """One prediction per instance (a mapping of every feature to its value), in order."""
        size = batch_size or self.classify_batch_size
        batches = [[dict(i) for i in b] for b in _batches(instances, size, "instances")]
        bodies = await self._posts(self.classify_path, "instances", batches)
        return [p for body in bodies for p in Prediction.list_from_json(body)]

    async def classifier_schema(self) -> ClassifierSchema:
        """The features an instance must have, the classes, the decision threshold."""
        return ClassifierSchema.from_json(await self.request_json("GET", self.classify_path))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
