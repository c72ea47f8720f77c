"""Request ids: in the response header, in every log line of the request, and in masked errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import structlog

from api.request_ids import accepted_request_id
from tests.conftest import Stack
from tests.documents import start_ok, wait_for_run
from tests.support.graphql_ws import GraphQLWSClient

PENDING = "{ permissionRequests { id } }"
MISSING_SESSION = '{ events(sessionId: "00000000-0000-0000-0000-000000000000") { seq } }'
GENERATED = re.compile(r"[0-9a-f]{32}")


class Boom(RuntimeError):
    pass


@pytest.fixture
def failing_listing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """permissionRequests fails the way a bug would: an exception the API does not know."""

    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise Boom("a bug, with a traceback the operator needs")

    monkeypatch.setattr(stack.api.services.permission_control, "list", fail)


@contextmanager
def traceback_lines() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """What Strawberry logs for an unexpected error (stdlib logging), with the structlog context bound
    at that moment, which the log formatter renders into the line."""
    seen: list[tuple[str, dict[str, Any]]] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), dict(structlog.contextvars.get_contextvars())))

    handler = Catch(level=logging.ERROR)
    logger = logging.getLogger("strawberry.execution")
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_a_sane_incoming_id_is_kept_and_anything_else_replaced() -> None:
    assert accepted_request_id("trace-7f3a.b:c/d=") == "trace-7f3a.b:c/d="
    for bad in (None, "", "a" * 129, "two words", "new\nline", '"quoted"', "-leading-dash"):
        assert GENERATED.fullmatch(accepted_request_id(bad)), bad


async def test_every_http_response_carries_a_request_id(stack: Stack) -> None:
    async with stack.client() as client:
        fresh = [await client.execute_raw(PENDING) for _ in range(2)]
        kept = await client.execute_raw(PENDING, headers={"X-Request-ID": "lb-4711"})
        replaced = await client.execute_raw(PENDING, headers={"X-Request-ID": "no spaces allowed"})
        unauthorized = await client.http.post(
            "/graphql", json={"query": PENDING}, headers={"Authorization": "Bearer nope"}
        )
        health = await client.http.get("/healthz")
    ids = [response.headers["x-request-id"] for response in fresh]
    assert all(GENERATED.fullmatch(value) for value in ids)
    assert ids[0] != ids[1]
    assert kept.headers["x-request-id"] == "lb-4711"
    assert GENERATED.fullmatch(replaced.headers["x-request-id"])
    assert unauthorized.status_code == 401
    assert GENERATED.fullmatch(unauthorized.headers["x-request-id"])
    assert GENERATED.fullmatch(health.headers["x-request-id"])


async def test_log_lines_of_a_request_carry_its_id(stack: Stack) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with stack.client() as client:
            answer = await client.execute_raw(MISSING_SESSION, headers={"X-Request-ID": "find-me-1"})
    assert answer.headers["x-request-id"] == "find-me-1"
    mine = [entry for entry in logs if entry.get("request_id") == "find-me-1"]
    # The client error is logged at info, one line, under the request's id.
    assert [entry["event"] for entry in mine] == ["graphql.client_error"], logs


async def test_a_run_outlives_the_request_that_started_it_and_does_not_log_under_its_id(stack: Stack) -> None:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with stack.client() as client:
            started = await start_ok(client, prompt="[scenario:echo]")
            await wait_for_run(client, started["run"]["id"])
    run_id = started["run"]["id"]
    run_lines = [entry for entry in logs if entry.get("run_id") == run_id]
    assert {"run.started", "run.finished"} <= {entry["event"] for entry in run_lines}, logs
    # The session's actor and the fan-out run in contexts of their own, not the startRun request's.
    assert all("request_id" not in entry for entry in run_lines), run_lines


@pytest.mark.usefixtures("failing_listing")
async def test_a_masked_error_names_the_request_id_its_traceback_is_logged_under(stack: Stack) -> None:
    with traceback_lines() as logged:
        async with stack.client() as client:
            response = await client.execute_raw(PENDING, headers={"X-Request-ID": "incident-42"})
            generated = await client.execute_raw(PENDING)
    error = response.json()["errors"][0]
    assert error["message"] == "Unexpected error."
    assert "a bug" not in response.text
    assert error["extensions"]["requestId"] == "incident-42"
    assert response.headers["x-request-id"] == "incident-42"
    other = generated.json()["errors"][0]["extensions"]["requestId"]
    assert other == generated.headers["x-request-id"]
    assert [context.get("request_id") for _, context in logged] == ["incident-42", other]
    assert all("a bug" in message for message, _ in logged)


@pytest.mark.usefixtures("failing_listing")
async def test_each_websocket_operation_has_its_own_id_under_the_sockets_id(stack: Stack) -> None:
    with traceback_lines() as logged:
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            handshake = ws.ws.response
            assert handshake is not None
            connection_id = handshake.headers["x-request-id"]
            results = []
            for _ in range(2):
                operation = await ws.subscribe(PENDING)
                results.append(await operation.next(timeout=30))
    assert GENERATED.fullmatch(connection_id)
    ids = [result["errors"][0]["extensions"]["requestId"] for result in results]
    assert ids == [f"{connection_id}.1", f"{connection_id}.2"]
    assert [result["errors"][0]["message"] for result in results] == ["Unexpected error."] * 2
    assert [context.get("request_id") for _, context in logged] == ids
