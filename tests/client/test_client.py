"""rayserve_client against a real HTTP server on loopback: retries, waits, errors, batches."""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import threading
import time
from typing import Any

import pytest
from rayserve_client import (
    ApiError,
    AsyncClient,
    AuthenticationError,
    Client,
    RetryEvent,
    RetryPolicy,
    UnreachableError,
    parse_retry_after,
)

from tests.client.conftest import Reply, ScriptedServer, Seen, embed_echo

OK = Reply(body={"model": "m", "dim": 1, "embeddings": [[1.0]]})
FAST = RetryPolicy(max_attempts=5, base_s=0.05, cap_s=1.0, jitter=0.5, deadline_s=10)


def _client(server: ScriptedServer, **kwargs: Any) -> Client:
    return Client(server.url, "rsk_test", **{"retry": FAST, **kwargs})


def test_backoff_doubles_from_base_up_to_the_cap_less_at_most_the_jitter_share() -> None:
    policy = RetryPolicy(base_s=0.25, cap_s=2.0, jitter=0.5)
    assert [policy.backoff_s(n, 0.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [policy.backoff_s(n, 0.999999) for n in (1, 4)] == pytest.approx([0.125, 1.0], abs=1e-5)
    full = RetryPolicy(base_s=1.0, cap_s=4.0, jitter=1.0)
    draws = [full.backoff_s(3, random.random()) for _ in range(1000)]
    assert 0 <= min(draws) < 0.5 and 3.5 < max(draws) <= 4.0  # anywhere in [0, 4]


@pytest.mark.parametrize(
    "bad",
    [{"max_attempts": 0}, {"jitter": 1.5}, {"base_s": -1}, {"deadline_s": 0}],
)
def test_a_policy_that_cannot_work_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_gateway_statuses_are_retried_with_waits_within_the_backoff_bounds(
    server: ScriptedServer, status: int
) -> None:
    server.script(Reply(status), Reply(status), Reply(status), OK)
    events: list[RetryEvent] = []
    with _client(server, on_retry=events.append) as client:
        assert client.embed(["x"]).vectors == [[1.0]]
    assert len(server.seen) == 4
    assert [e.status for e in events] == [status] * 3
    for n, (gap, event) in enumerate(zip(server.gaps(), events, strict=True), start=1):
        ceiling = min(FAST.cap_s, FAST.base_s * 2 ** (n - 1))
        assert ceiling * (1 - FAST.jitter) <= event.delay_s <= ceiling
        assert event.delay_s <= gap < event.delay_s + 0.3  # the client really waited


def test_retry_after_in_seconds_is_a_floor_on_the_wait(server: ScriptedServer) -> None:
    server.script(Reply(503, "queue full", {"Retry-After": "1"}), OK)
    events: list[RetryEvent] = []
    with _client(server, on_retry=events.append) as client:
        client.embed(["x"])
    assert events[0].retry_after_s == 1.0
    assert server.gaps()[0] >= 1.0  # the backoff alone would have been <= 0.05 s


def test_retry_after_as_an_http_date_is_honoured(server: ScriptedServer) -> None:
    start = time.time()
    until = int(start) + 3  # an HTTP-date has whole seconds
    date = email.utils.formatdate(until, usegmt=True)
    server.script(Reply(429, {"error": "slow down"}, {"Retry-After": date}), OK)
    events: list[RetryEvent] = []
    with _client(server, on_retry=events.append) as client:
        client.embed(["x"])
    retry_after = events[0].retry_after_s
    # What was left of the wait when the answer came (however slow this machine was).
    assert retry_after is not None and 0.5 < retry_after <= until - start
    assert server.gaps()[0] >= retry_after - 0.01


def test_a_retry_after_past_the_deadline_fails_at_once(server: ScriptedServer) -> None:
    server.script(Reply(503, "busy", {"Retry-After": "120"}))
    start = time.monotonic()
    with _client(server) as client, pytest.raises(ApiError) as failed:
        client.embed(["x"])
    assert time.monotonic() - start < 1.0
    assert (failed.value.status, failed.value.retry_after_s, len(server.seen)) == (503, 120.0, 1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),  # `now` is 10 s earlier
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no wait
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=1445412470.0) == expected


@pytest.mark.parametrize(
    ("status", "body", "error_type"),
    [
        (400, {"error": "request body is not valid JSON"}, ApiError),
        (401, {"error": "invalid API key", "hint": "send 'Authorization: Bearer <API key>'"},
         AuthenticationError),
        (413, {"error": "300 texts in one request; at most 256"}, ApiError),
        (422, {"error": "request body does not match the schema",
               "details": [{"loc": "texts", "msg": "Input should be a valid list"}]}, ApiError),
    ],
)  # fmt: skip
def test_client_errors_are_never_retried_and_carry_the_servers_reason(
    server: ScriptedServer, status: int, body: dict[str, Any], error_type: type[ApiError]
) -> None:
    server.script(Reply(status, body))
    with _client(server) as client, pytest.raises(error_type) as failed:
        client.embed(["x"])
    assert len(server.seen) == 1
    error = failed.value
    assert (error.status, error.reason) == (status, body["error"])
    assert error.details == body.get("details")
    assert body["error"] in str(error) and str(status) in str(error)


def test_when_retries_run_out_the_last_status_and_reason_are_raised(
    server: ScriptedServer,
) -> None:
    server.script(Reply(503, "no healthy upstream"))
    policy = RetryPolicy(max_attempts=3, base_s=0.01, deadline_s=10)
    with _client(server, retry=policy) as client, pytest.raises(ApiError) as failed:
        client.embed(["x"])
    assert (failed.value.status, failed.value.reason, failed.value.attempts) == (
        503,
        "no healthy upstream",
        3,
    )
    assert "after 3 attempts" in str(failed.value)
    assert len(server.seen) == 3


def test_without_retries_the_first_503_reaches_the_caller(server: ScriptedServer) -> None:
    server.script(Reply(503, "busy"), OK)
    with _client(server, retry=RetryPolicy.none()) as client, pytest.raises(ApiError):
        client.embed(["x"])
    assert len(server.seen) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_retried_until_the_server_comes_up() -> None:
    port = _free_port()
    servers: list[ScriptedServer] = []

    def start_later() -> None:
        time.sleep(0.8)
        servers.append(ScriptedServer(port))
        servers[0].script(OK)

    events: list[RetryEvent] = []
    threading.Thread(target=start_later, daemon=True).start()
    policy = RetryPolicy(max_attempts=20, base_s=0.05, cap_s=0.2, deadline_s=10)
    try:
        with Client(f"http://127.0.0.1:{port}", "k", retry=policy, on_retry=events.append) as c:
            assert c.embed(["x"]).vectors == [[1.0]]
    finally:
        for started in servers:
            started.close()
    assert events and all(e.status is None and "ConnectError" in e.error for e in events)


def test_a_connection_dropped_without_an_answer_is_retried(server: ScriptedServer) -> None:
    server.script(Reply(drop=True), OK)
    with _client(server) as client:
        assert client.embed(["x"]).vectors == [[1.0]]
    server.script(Reply(drop=True))
    with _client(server, retry=RetryPolicy.none()) as client, pytest.raises(UnreachableError) as e:
        client.embed(["x"])
    assert "RemoteProtocolError" in str(e.value)
    assert e.value.__cause__ is not None


def test_the_deadline_bounds_a_call_whose_attempts_time_out(server: ScriptedServer) -> None:
    server.script(Reply(delay_s=3.0))
    policy = RetryPolicy(max_attempts=10, base_s=0.05, deadline_s=1.0)
    start = time.monotonic()
    with _client(server, retry=policy, timeout_s=0.3) as client, pytest.raises(UnreachableError):
        client.embed(["x"])
    assert 0.9 < time.monotonic() - start < 1.5
    assert len(server.seen) >= 2  # timed-out attempts were retried within the deadline


def test_key_and_url_come_from_the_environment(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAYSERVE_API_KEY", raising=False)
    monkeypatch.setenv("RAYSERVE_URL", server.url)
    with pytest.raises(ValueError, match="RAYSERVE_API_KEY"):
        Client()
    monkeypatch.setenv("RAYSERVE_API_KEY", "rsk_from_env")
    server.script(OK)
    with Client() as client:
        client.embed(["x"])
    with Client(api_key="rsk_from_arg") as client:  # an argument wins
        client.embed(["x"])
    assert [s.headers["authorization"] for s in server.seen] == [
        "Bearer rsk_from_env",
        "Bearer rsk_from_arg",
    ]


def test_one_client_reuses_its_connection(server: ScriptedServer) -> None:
    server.script(OK)
    with _client(server) as client:
        for _ in range(5):
            client.embed(["x"])
    assert len({s.peer_port for s in server.seen}) == 1


def test_embed_sends_batches_of_at_most_the_limit_and_keeps_the_order(
    server: ScriptedServer,
) -> None:
    server.handler = embed_echo
    texts = [str(i) for i in range(600)]
    with _client(server) as client:
        result = client.embed(texts)
    assert [len(s.body["texts"]) for s in server.seen] == [256, 256, 88]
    assert result.vectors == [[float(i)] for i in range(600)]
    assert (result.model, result.dim, len(result)) == ("echo", 1, 600)


def test_async_embed_keeps_the_order_when_batches_finish_out_of_order(
    server: ScriptedServer,
) -> None:
    def slow_first(seen: Seen) -> Reply:  # the first batch answers last
        reply = embed_echo(seen)
        reply.delay_s = 0.5 if seen.body["texts"][0] == "0" else 0.0
        return reply

    server.handler = slow_first

    async def run() -> list[list[float]]:
        async with AsyncClient(server.url, "k", retry=FAST, max_concurrency=4) as client:
            return (await client.embed([str(i) for i in range(100)], batch_size=30)).vectors

    assert asyncio.run(run()) == [[float(i)] for i in range(100)]
    assert len(server.seen) == 4


def test_async_client_retries_overload_too(server: ScriptedServer) -> None:
    server.script(Reply(503, "busy"), Reply(503, "busy"), OK)

    async def run() -> list[list[float]]:
        async with AsyncClient(server.url, "k", retry=FAST) as client:
            return (await client.embed(["x"])).vectors

    assert asyncio.run(run()) == [[1.0]]
    assert len(server.seen) == 3


def test_classify_batches_instances_and_returns_typed_predictions(
    server: ScriptedServer,
) -> None:
    def predict(seen: Seen) -> Reply:
        if seen.method == "GET":
            schema = {"features": ["a"], "classes": ["no", "yes"], "decision_threshold": 0.5}
            return Reply(body=schema)
        predictions = [
            {"label": "yes" if inst["a"] > 0 else "no", "probabilities": {"no": 0.0, "yes": 1.0}}
            for inst in seen.body["instances"]
        ]
        return Reply(body={"predictions": predictions})

    server.handler = predict
    instances = [{"a": float(i % 2)} for i in range(5)]
    with _client(server, classify_batch_size=2) as client:
        schema = client.classifier_schema()
        predictions = client.classify(instances)
    assert schema.features == ["a"] and schema.classes == ["no", "yes"]
    assert [p.label for p in predictions] == ["no", "yes", "no", "yes", "no"]
    assert predictions[0].probabilities == {"no": 0.0, "yes": 1.0}
    assert [len(s.body["instances"]) for s in server.seen[1:]] == [2, 2, 1]


def test_a_single_string_or_an_empty_list_is_refused_before_sending(
    server: ScriptedServer,
) -> None:
    with _client(server) as client:
        with pytest.raises(TypeError, match="list"):
            client.embed("one text")
        with pytest.raises(ValueError, match="at least one"):
            client.embed([])
    assert server.seen == []


def test_a_404_is_retried_only_on_a_route_that_has_answered_before(
    server: ScriptedServer,
) -> None:
    not_found = Reply(
        404, "Path '/embed' not found. Ping http://.../-/routes for available routes."
    )
    server.script(not_found)
    with _client(server) as client:
        with pytest.raises(ApiError) as failed:  # a wrong URL fails at once
            client.embed(["x"])
        assert (failed.value.status, len(server.seen)) == (404, 1)
        server.script(OK, not_found, not_found, OK)  # a head restart rebuilding its routes
        client.embed(["x"])
        assert client.embed(["x"]).vectors == [[1.0]]
    assert len(server.seen) == 5
