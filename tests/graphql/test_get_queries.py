"""GraphQL over GET: queries only (urql's default, Apollo's useGETForQueries), never mutations."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Stack
from tests.documents import start_ok

SESSION = "query Session($id: ID!) { session(id: $id) { __typename id title } }"
COUNT_SESSIONS = "{ sessions(first: 100) { edges { node { id } } } }"
START = 'mutation { startRun(input: {prompt: "over GET"}) { __typename } }'
WATCH = "subscription($id: ID!) { sessionEvents(sessionId: $id) { seq } }"


def _get(stack: Stack, params: dict[str, str], *, key: str | None = None) -> httpx.Request:
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Request("GET", f"{stack.api.base_url}/graphql", params=params, headers=headers)


async def _send(request: httpx.Request) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        return await http.send(request)


class TestQueriesViaGet:
    async def test_a_query_with_variables_runs_over_get(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="read me over GET", title="GET me")
        session_id = started["session"]["id"]
        params = {"query": SESSION, "variables": json.dumps({"id": session_id}), "operationName": "Session"}
        response = await _send(_get(stack, params, key=stack.key))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "data": {"session": {"__typename": "Session", "id": session_id, "title": "GET me"}}
        }

    async def test_another_tenants_session_reads_as_null_over_get(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="not yours")
        params = {"query": SESSION, "variables": json.dumps({"id": started["session"]["id"]})}
        response = await _send(_get(stack, params, key=stack.other_key))
        assert response.json() == {"data": {"session": None}}

    @pytest.mark.parametrize("key", [None, "cak_nope_nope"])
    async def test_a_missing_or_wrong_key_is_401(self, stack: Stack, key: str | None) -> None:
        response = await _send(_get(stack, {"query": COUNT_SESSIONS}, key=key))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_a_browser_asking_for_a_query_still_needs_the_key(self, stack: Stack) -> None:
        response = await _send(
            httpx.Request(
                "GET",
                f"{stack.api.base_url}/graphql",
                params={"query": COUNT_SESSIONS},
                headers={"Accept": "text/html"},
            )
        )
        assert response.status_code == 401


class TestOnlyQueriesViaGet:
    async def test_a_mutation_over_get_is_refused_and_creates_nothing(self, stack: Stack) -> None:
        async with stack.client() as client:
            before = len((await client.execute(COUNT_SESSIONS))["sessions"]["edges"])
            response = await _send(_get(stack, {"query": START}, key=stack.key))
            after = len((await client.execute(COUNT_SESSIONS))["sessions"]["edges"])
        # Strawberry answers 400 (the GraphQL-over-HTTP draft would say 405); either way nothing ran.
        assert response.status_code == 400, response.text
        assert "mutations are not allowed when using GET" in response.text
        assert after == before

    async def test_a_subscription_over_get_is_refused(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="watch me over GET")
        params = {"query": WATCH, "variables": json.dumps({"id": started["session"]["id"]})}
        response = await _send(_get(stack, params, key=stack.key))
        assert response.status_code == 400, response.text
        assert "subscriptions are not allowed when using GET" in response.text

    async def test_a_subscription_over_post_is_refused_too(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="watch me over POST")
            response = await client.execute_raw(WATCH, {"id": started["session"]["id"]})
        assert response.status_code == 400, response.text
        assert "subscriptions are not allowed when using POST" in response.text

    async def test_graphiql_is_still_served_to_browsers_without_a_key(self, stack: Stack) -> None:
        response = await _send(
            httpx.Request("GET", f"{stack.api.base_url}/graphql", headers={"Accept": "text/html"})
        )
        assert response.status_code == 200
        assert "graphiql" in response.text.lower()
