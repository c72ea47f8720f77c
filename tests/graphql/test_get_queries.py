"""GraphQL over GET: queries only (urql's default, Apollo's useGETForQueries), never mutations."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from graphql_schema.persisted_queries import MAX_QUERY_CHARS, PersistedQueryStore
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


def _persisted(query: str) -> dict[str, object]:
    return {"persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(query.encode()).hexdigest()}}


class TestAutomaticPersistedQueries:
    """Apollo's APQ flow: hash only over GET; on PersistedQueryNotFound, the query with its hash once."""

    async def test_an_unknown_hash_asks_for_the_query_then_the_hash_alone_is_enough(
        self, stack: Stack
    ) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="persist me", title="APQ")
        query = SESSION.replace("title", "title createdAt")
        variables = json.dumps({"id": started["session"]["id"]})
        hashed = {"extensions": json.dumps(_persisted(query)), "variables": variables}

        miss = await _send(_get(stack, hashed, key=stack.key))
        async with stack.client() as client:
            registered = await client.execute_raw(query, json.loads(variables), extensions=_persisted(query))
        hit = await _send(_get(stack, hashed, key=stack.key))

        assert miss.status_code == 200
        [error] = miss.json()["errors"]
        assert (error["message"], error["extensions"]["code"]) == (
            "PersistedQueryNotFound",
            "PERSISTED_QUERY_NOT_FOUND",
        )
        assert registered.json()["data"]["session"]["title"] == "APQ"
        assert hit.status_code == 200
        assert hit.json()["data"]["session"] == registered.json()["data"]["session"]

    async def test_a_hash_that_does_not_match_the_query_is_refused(self, stack: Stack) -> None:
        async with stack.client() as client:
            response = await client.execute_raw(COUNT_SESSIONS, extensions=_persisted(SESSION))
        [error] = response.json()["errors"]
        assert error["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"
        assert response.json().get("data") is None

    async def test_a_persisted_mutation_is_still_refused_over_get(self, stack: Stack) -> None:
        async with stack.client() as client:
            before = len((await client.execute(COUNT_SESSIONS))["sessions"]["edges"])
            # Registered over POST (which runs it once, as a mutation may), then replayed by hash over GET.
            await client.execute_raw(START, extensions=_persisted(START))
            middle = len((await client.execute(COUNT_SESSIONS))["sessions"]["edges"])
            response = await _send(_get(stack, {"extensions": json.dumps(_persisted(START))}, key=stack.key))
            after = len((await client.execute(COUNT_SESSIONS))["sessions"]["edges"])
        assert response.status_code == 400
        assert "mutations are not allowed when using GET" in response.text
        assert (middle, after) == (before + 1, before + 1)


def test_the_store_is_bounded_and_drops_the_least_recently_used() -> None:
    store = PersistedQueryStore(size=2)
    store.put("a", "{ a }")
    store.put("b", "{ b }")
    assert store.get("a") == "{ a }"
    store.put("c", "{ c }")
    store.put("huge", "x" * (MAX_QUERY_CHARS + 1))
    found = [store.get(key) for key in ("a", "b", "c", "huge")]
    assert found == ["{ a }", None, "{ c }", None]
