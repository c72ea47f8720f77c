"""Bad input gets a clear, typed error, changes nothing, and the server keeps serving."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from tests.conftest import Stack
from tests.documents import (
    EVENTS,
    INTERRUPT_RUN,
    RUN,
    SESSION,
    START_RUN,
    start_ok,
    start_run,
    wait_for_run,
)
from tests.support.graphql_ws import GraphQLWSClient, GraphQLWSError


class TestStartRunValidation:
    @pytest.mark.parametrize("prompt", ["", "   \n\t"])
    async def test_an_empty_prompt_is_a_validation_error(self, stack: Stack, prompt: str) -> None:
        async with stack.client() as client:
            result = await start_run(client, prompt=prompt)
        assert result["__typename"] == "ValidationError"
        assert result["field"] == "prompt"
        assert result["code"] == "VALIDATION_ERROR"

    async def test_an_oversized_prompt_is_a_validation_error(self, stack: Stack) -> None:
        async with stack.client() as client:
            result = await start_run(client, prompt="x" * (stack.settings.max_prompt_chars + 1))
        assert result["__typename"] == "ValidationError"
        assert "limit" in result["message"]

    async def test_an_unknown_session_is_not_found(self, stack: Stack) -> None:
        missing = str(uuid.uuid4())
        async with stack.client() as client:
            result = await start_run(client, prompt="hi", sessionId=missing)
        assert result["__typename"] == "NotFoundError"
        assert result["resource"] == "Session"
        assert result["resourceId"] == missing

    async def test_bypass_permissions_is_refused_by_policy(self, stack: Stack) -> None:
        async with stack.client() as client:
            result = await start_run(client, prompt="hi", permissionMode="BYPASS_PERMISSIONS")
        assert result["__typename"] == "PolicyViolationError"
        assert result["rule"] == "deployment.permission_modes"

    async def test_an_unregistered_mcp_server_is_refused_by_policy(self, stack: Stack) -> None:
        async with stack.client() as client:
            result = await start_run(client, prompt="hi", mcpServers=["filesystem"])
        assert result["__typename"] == "PolicyViolationError"

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"maxTurns": 0}, "maxTurns"),
            ({"maxBudgetUsd": -1.0}, "maxBudgetUsd"),
            ({"allowedTools": ["Bash; rm -rf /"]}, "allowedTools"),
            ({"outputSchema": [1, 2]}, "outputSchema"),
            ({"model": "claude-sonnet-5", "fallbackModel": "claude-sonnet-5"}, "fallbackModel"),
            ({"fallbackModel": "no such; model"}, "fallbackModel"),
            ({"systemPrompt": "mine", "systemPromptPreset": {"append": "and more"}}, "systemPromptPreset"),
            ({"thinking": {"mode": "ENABLED"}}, "thinking.budgetTokens"),
            ({"thinking": {"mode": "ENABLED", "budgetTokens": 100}}, "thinking.budgetTokens"),
            ({"thinking": {"mode": "ADAPTIVE", "budgetTokens": 2048}}, "thinking.budgetTokens"),
            ({"thinking": {"mode": "DISABLED", "display": "SUMMARIZED"}}, "thinking.display"),
            (
                {"agents": [{"name": "helper", "description": "d", "prompt": "p", "model": "x y"}]},
                "agents.model",
            ),
        ],
    )
    async def test_out_of_bounds_options_name_their_field(
        self, stack: Stack, fields: dict[str, object], field: str
    ) -> None:
        async with stack.client() as client:
            result = await start_run(client, prompt="hi", **fields)
        assert result["__typename"] == "ValidationError"
        assert result["field"] == field

    async def test_rejected_input_creates_no_session(self, stack: Stack) -> None:
        query = '{ sessions(first: 100, filter: {titleContains: "never-created"}) { edges { node { id } } } }'
        async with stack.client() as client:
            await start_run(client, prompt="never-created", maxTurns=0)
            data = await client.execute(query)
        assert data["sessions"]["edges"] == []


class TestBusySession:
    async def test_reject_policy_answers_session_busy_and_enqueue_runs_later(self, stack: Stack) -> None:
        async with stack.client() as client:
            first = await start_ok(client, prompt="[scenario:slow]")
            session_id = first["session"]["id"]
            busy = await start_run(client, prompt="again", sessionId=session_id, onBusy="REJECT")
            queued = await start_ok(client, prompt="after you", sessionId=session_id, onBusy="ENQUEUE")
            assert (await wait_for_run(client, first["run"]["id"]))["status"] == "COMPLETED"
            later = await wait_for_run(client, queued["run"]["id"])
        assert busy["__typename"] == "SessionBusyError"
        assert busy["sessionId"] == session_id
        assert busy["activeRunId"] == first["run"]["id"]
        assert later["status"] == "COMPLETED"
        assert later["result"]["result"] == "You said: after you"


class TestMalformedRequests:
    async def test_a_syntax_error_is_a_graphql_error_not_a_500(self, stack: Stack) -> None:
        async with stack.client() as client:
            response = await client.execute_raw("{ sessions { edges { node { id } }")
        assert response.status_code in (200, 400)
        body = response.json()
        assert body["errors"][0]["message"].startswith("Syntax Error")

    async def test_an_unknown_field_is_a_validation_error(self, stack: Stack) -> None:
        async with stack.client() as client:
            response = await client.execute_raw("{ sessions { edges { node { password } } } }")
        assert response.status_code in (200, 400)
        assert "password" in response.json()["errors"][0]["message"]

    async def test_a_too_deep_query_is_refused(self, stack: Stack) -> None:
        nested = "run { " * 20 + "id" + " }" * 20
        query = f'{{ run(id: "x") {{ session {{ runs {{ edges {{ node {{ {nested} }} }} }} }} }} }}'
        async with stack.client() as client:
            response = await client.execute_raw(query)
        assert "depth" in response.json()["errors"][0]["message"]

    async def test_a_bad_cursor_is_a_clear_error(self, stack: Stack) -> None:
        async with stack.client() as client:
            response = await client.execute_raw('{ sessions(after: "not-a-cursor") { edges { cursor } } }')
        assert response.json()["errors"][0]["message"] == "not a cursor of this connection"

    async def test_unknown_ids_read_as_null_or_not_found(self, stack: Stack) -> None:
        missing = str(uuid.uuid4())
        async with stack.client() as client:
            assert (await client.execute(SESSION, {"id": missing}))["session"] is None
            assert (await client.execute(RUN, {"id": missing}))["run"] is None
            interrupted = (await client.execute(INTERRUPT_RUN, {"runId": missing}))["interruptRun"]
            events = await client.execute_raw(EVENTS, {"sessionId": missing})
        assert interrupted["__typename"] == "NotFoundError"
        assert events.json()["errors"][0]["message"] == f"Session {missing!r} not found"


class TestTenantIsolation:
    async def test_another_tenants_session_reads_as_not_found_everywhere(self, stack: Stack) -> None:
        async with stack.client() as mine, stack.client(stack.other_key) as theirs:
            started = await start_ok(mine, prompt="private")
            session_id, run_id = started["session"]["id"], started["run"]["id"]
            await wait_for_run(mine, run_id)

            assert (await theirs.execute(SESSION, {"id": session_id}))["session"] is None
            assert (await theirs.execute(RUN, {"id": run_id}))["run"] is None
            follow_up = await start_run(theirs, prompt="let me in", sessionId=session_id)
            interrupt = (await theirs.execute(INTERRUPT_RUN, {"runId": run_id}))["interruptRun"]
            events = await theirs.execute_raw(EVENTS, {"sessionId": session_id})
            listed = await theirs.execute("{ sessions(first: 100) { edges { node { id } } } }")
        assert follow_up["__typename"] == "NotFoundError"
        assert interrupt["__typename"] == "NotFoundError"
        assert "not found" in events.json()["errors"][0]["message"]
        assert session_id not in {edge["node"]["id"] for edge in listed["sessions"]["edges"]}

    async def test_another_tenant_cannot_subscribe(self, stack: Stack) -> None:
        async with stack.client() as mine:
            started = await start_ok(mine, prompt="private stream")
            await wait_for_run(mine, started["run"]["id"])
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.other_key) as ws:
            sub = await ws.subscribe(
                "subscription($id: ID!) { sessionEvents(sessionId: $id) { seq } }",
                {"id": started["session"]["id"]},
            )
            try:
                answer: object = (await sub.next(timeout=10)).get("errors")
            except GraphQLWSError as failure:
                answer = failure.payload
        assert "not found" in str(answer)


def _nested(depth: int) -> object:
    value: object = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Expected client errors are logged at info at most, never as an ERROR with a traceback (by Strawberry
    for a masked error, by uvicorn for a 500). Other loggers belong to background work of the shared stack."""
    loud = [
        r
        for r in caplog.records
        if r.name.startswith(("strawberry", "uvicorn")) and (r.levelno >= logging.ERROR or r.exc_info)
    ]
    assert not loud, [r.getMessage()[:300] for r in loud]


class TestBadBytes:
    """Bytes a client should never send get a 400 or a validation error, never a 500 or a masked error."""

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"null", id="null"),
            pytest.param(b"[]", id="empty-batch"),
            pytest.param(b'"a string"', id="string"),
            pytest.param(b'{"query": "{ sessions { edges { cursor } } }\xff"}', id="invalid-utf8-query"),
            pytest.param(
                b'{"query": "' + START_RUN.replace("\n", " ").encode() + b'", '
                b'"variables": {"input": {"prompt": "caf\xe9 \xc3"}}}',
                id="invalid-utf8-prompt",
            ),
            pytest.param(
                b'{"query": "{ sessions { edges { cursor } } }", "variables": {"x": '
                + b"[" * 100_000
                + b"]" * 100_000
                + b"}}",
                id="100000-deep-variables",
            ),
            pytest.param(b'{"query": "\\ud800"}', id="lone-surrogate-escape"),
        ],
    )
    async def test_an_unparseable_body_is_a_400(
        self, stack: Stack, body: bytes, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with stack.client() as client:
            response = await client.http.post(
                "/graphql", content=body, headers={"Content-Type": "application/json"}
            )
            still = await client.execute("{ sessions(first: 1) { edges { cursor } } }")
        assert response.status_code == 400, response.text[:500]
        assert "sessions" in still
        _no_tracebacks(caplog)

    async def test_a_50000_deep_output_schema_in_variables_is_refused(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        body = {"query": START_RUN, "variables": {"input": {"prompt": "hi", "outputSchema": "PLACEHOLDER"}}}
        # json.dumps itself cannot go 50,000 deep: build the nesting as text.
        deep = '{"type":"object","properties":{"x":' * 50_000 + '{"type":"string"}' + "}}" * 50_000
        text = json.dumps(body).replace('"PLACEHOLDER"', deep)
        async with stack.client() as client:
            response = await client.http.post(
                "/graphql", content=text.encode(), headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 400, response.text[:500]
        _no_tracebacks(caplog)

    async def test_a_50000_deep_literal_in_the_query_is_refused(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        deep = "{x: " * 50_000 + "1" + "}" * 50_000
        query = f'mutation {{ startRun(input: {{prompt: "hi", outputSchema: {deep}}}) {{ __typename }} }}'
        async with stack.client() as client:
            response = await client.execute_raw(query)
        assert response.status_code in (200, 400), response.text[:500]
        assert "Unexpected error." not in response.text
        assert response.json()["errors"]
        _no_tracebacks(caplog)

    async def test_an_output_schema_past_the_depth_limit_is_a_validation_error(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with stack.client() as client:
            response = await client.execute_raw(
                START_RUN, {"input": {"prompt": "hi", "outputSchema": _nested(200)}}
            )
        assert_validation_error(response.json())
        assert "deeper than" in response.text
        _no_tracebacks(caplog)

    async def test_nul_in_ids_is_a_validation_error(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad = "a\x00b"
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            for document in (SESSION, RUN, EVENTS):
                name = "sessionId" if document is EVENTS else "id"
                assert_validation_error(await _over_ws(ws, document, {name: bad}))
            assert_validation_error(await _over_ws(ws, INTERRUPT_RUN, {"runId": bad}))
            # A literal in the document, escaped the GraphQL way.
            assert_validation_error(await _over_ws(ws, '{ session(id: "a\\u0000b") { id } }'))
            assert_validation_error(await _over_ws(ws, SESSION_EVENTS_SEQ, {"id": bad}))
        async with stack.client() as client:
            assert_validation_error((await client.execute_raw(SESSION, {"id": bad})).json())
        _no_tracebacks(caplog)

    async def test_nul_in_prompts_titles_filters_and_json_is_a_validation_error(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        bad = "a\x00b"
        inputs = [{"prompt": bad}, {"prompt": "hi", "title": bad}, {"prompt": "hi", "outputSchema": {bad: 1}}]
        async with stack.client() as client:
            for fields in inputs:
                assert_validation_error((await client.execute_raw(START_RUN, {"input": fields})).json())
            listed = await client.execute_raw(TITLE_FILTER, {"t": bad})
            created = await client.execute("{ sessions(first: 100) { edges { node { title } } } }")
        assert_validation_error(listed.json())
        assert all("\x00" not in (edge["node"]["title"] or "") for edge in created["sessions"]["edges"])
        _no_tracebacks(caplog)

    async def test_lone_surrogates_are_refused_as_invalid_json(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Python's own JSON reads "\ud800" as a lone surrogate, which no database can store; orjson refuses
        # it, like invalid UTF-8: HTTP 400, and on a WebSocket the protocol's close for a bad message.
        body = b'{"query": "query($id: ID!) { session(id: $id) { id } }", "variables": {"id": "x\\udfffy"}}'
        async with stack.client() as client:
            response = await client.http.post(
                "/graphql", content=body, headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 400, response.text[:500]
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            query = '{ session(id: \\"\\ud800\\") { id } }'
            await ws.ws.send('{"id": "1", "type": "subscribe", "payload": {"query": "' + query + '"}}')
            assert await ws.wait_closed(timeout=10) == 4400
        async with GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as ws:
            assert (await ws.execute(SESSION, {"id": "fine"}))["data"] == {"session": None}
        _no_tracebacks(caplog)

    async def test_a_subscription_over_plain_http_is_refused_clearly(
        self, stack: Stack, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with stack.client() as client:
            response = await client.execute_raw("subscription { sessionChanges { kind } }")
        # Subscriptions are served over the WebSocket only (graphql_schema/schema.py, ApiSchema).
        assert response.status_code == 400
        assert "subscriptions are not allowed" in response.text
        _no_tracebacks(caplog)


SESSION_EVENTS_SEQ = "subscription($id: ID!) { sessionEvents(sessionId: $id) { seq } }"
TITLE_FILTER = "query($t: String!) { sessions(filter: {titleContains: $t}) { edges { cursor } } }"


async def _over_ws(
    ws: GraphQLWSClient, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The first result of an operation over the socket; an ``error`` message reads as ``{"errors": …}``."""
    sub = await ws.subscribe(query, variables)
    try:
        return await sub.next(timeout=10)
    except GraphQLWSError as failure:
        return {"errors": failure.payload}
    finally:
        await sub.complete()


def assert_validation_error(result: dict[str, Any]) -> None:
    """A top-level error coded VALIDATION_ERROR, or a ValidationError member of a mutation's union."""
    text = json.dumps(result)
    assert "Unexpected error." not in text, text
    errors = result.get("errors") or []
    if errors:
        assert any(e.get("extensions", {}).get("code") == "VALIDATION_ERROR" for e in errors), errors
        return
    data = result["data"]
    (value,) = data.values()
    assert value["__typename"] == "ValidationError", value
