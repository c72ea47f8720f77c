"""Bad input gets a clear, typed error, changes nothing, and the server keeps serving."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Stack
from tests.documents import EVENTS, INTERRUPT_RUN, RUN, SESSION, start_ok, start_run, wait_for_run
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
