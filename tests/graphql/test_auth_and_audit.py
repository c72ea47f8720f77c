"""API keys on HTTP and on connection_init, and the audit trail every control action leaves."""

from __future__ import annotations

import argparse
import asyncio

import httpx
import pytest

from api import keys
from api.auth import create_key
from tests.conftest import Stack
from tests.documents import INTERRUPT_RUN, start_ok, wait_for_run
from tests.support.graphql_ws import ConnectionClosedWithCode, GraphQLWSClient, Subscription

SESSIONS = "{ sessions { edges { node { id } } } }"
AUDIT = """
query Audit($filter: AuditFilter, $first: Int, $after: String) {
  auditLog(filter: $filter, first: $first, after: $after) {
    edges { cursor node { id at action actor targetType targetId details } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


class TestHttpAuth:
    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer cak_nope_nope"},
            {"Authorization": "Basic abc"},
            {"Authorization": "Bearer"},
        ],
    )
    async def test_a_missing_or_wrong_key_is_401(self, stack: Stack, headers: dict[str, str]) -> None:
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            response = await http.post("/graphql", json={"query": SESSIONS}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_graphiql_loads_without_a_key(self, stack: Stack) -> None:
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            response = await http.get("/graphql", headers={"Accept": "text/html"})
        assert response.status_code == 200
        assert "graphiql" in response.text.lower()

    async def test_health_ready_and_metrics(self, stack: Stack) -> None:
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            ready = await http.get("/readyz")
            metrics = await http.get("/metrics")
        assert ready.status_code == 200
        assert ready.json() == {
            "ready": True,
            "database": True,
            "fanout": True,
            "sandbox": True,
            "sandboxMode": "bubblewrap",
        }
        assert "agent_bus_messages_published" in metrics.text


class TestWebSocketAuth:
    @pytest.mark.parametrize("token", [None, "cak_wrong_key"])
    async def test_a_missing_or_wrong_key_closes_4403(self, stack: Stack, token: str | None) -> None:
        with pytest.raises(ConnectionClosedWithCode) as closed:
            async with GraphQLWSClient.connect(stack.api.ws_url, token=token):
                pass
        assert closed.value.code == 4403

    async def test_the_lowercase_authorization_key_is_accepted(self, stack: Stack) -> None:
        init = {"authorization": f"Bearer {stack.key}"}
        async with GraphQLWSClient.connect(stack.api.ws_url, init_payload=init) as ws:
            result = await ws.execute(SESSIONS)
        assert "errors" not in result

    async def test_a_socket_waiting_for_connection_init_is_closed(self, stack: Stack) -> None:
        from tests.support.graphql_ws import raw_ws, wait_close

        async with raw_ws(stack.api.ws_url) as ws:
            code, _ = await wait_close(ws, timeout=stack.settings.connection_init_timeout_seconds + 5)
        assert code == 4408


async def _drain(feed: Subscription) -> None:
    """Read the operation's payloads until it ends (raises when it does)."""
    while True:
        await feed.next(timeout=5)


class TestRevocation:
    async def test_revoking_a_key_closes_its_open_sockets_4403_within_seconds(self, stack: Stack) -> None:
        key = await create_key(stack.api.services.db, tenant_name="tenant-a", name="to be revoked")
        async with (
            GraphQLWSClient.connect(stack.api.ws_url, token=key.secret) as doomed,
            GraphQLWSClient.connect(stack.api.ws_url, token=stack.key) as other,
        ):
            feed = await doomed.subscribe("subscription { sessionChanges { kind } }")
            assert "errors" not in await doomed.execute(SESSIONS)
            # The operator's command, as `claude-agent-api keys revoke ID` runs it.
            assert (
                await keys.main(argparse.Namespace(keys_command="revoke", id=key.key_id), stack.settings) == 0
            )
            loop = asyncio.get_running_loop()
            revoked_at = loop.time()
            code = await doomed.wait_closed(timeout=4 * stack.settings.ws_auth_recheck_seconds + 10)
            took = loop.time() - revoked_at
            # The tenant's earlier runs may still be changing sessions: their changes, queued before the
            # close, come first; the socket has closed, so the queue is finite.
            with pytest.raises(ConnectionClosedWithCode):
                await _drain(feed)
            # Another key's socket on the same replica is untouched.
            assert "errors" not in await other.execute(SESSIONS)
        # Over HTTP the key is refused once the verified-key cache lets it go (AUTH_CACHE_SECONDS).
        deadline = loop.time() + stack.settings.auth_cache_seconds + 10
        async with stack.client(key.secret) as client:
            while (refused := await client.execute_raw(SESSIONS)).status_code == 200:
                assert loop.time() < deadline, "a revoked key still works over HTTP"
                await asyncio.sleep(0.2)
        assert code == 4403
        assert doomed.close_reason == "API key revoked"
        assert refused.status_code == 401
        print(f"revoked key's socket closed {took:.2f} s after the revocation committed")


class TestAuditTrail:
    async def test_start_follow_up_and_interrupt_are_audited_with_who_and_what(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="[scenario:slow]")
            session_id, first_run = started["session"]["id"], started["run"]["id"]
            follow = await start_ok(client, prompt="next", sessionId=session_id)
            await client.execute(INTERRUPT_RUN, {"runId": follow["run"]["id"]})
            await wait_for_run(client, first_run)
            entries = [
                edge["node"]
                for edge in (await client.execute(AUDIT, {"first": 100}))["auditLog"]["edges"]
                if edge["node"]["targetId"] in {session_id, first_run, follow["run"]["id"]}
            ]
            other_tenant = (await _audit_of(stack, stack.other_key))["auditLog"]["edges"]
        actions = [(e["action"], e["targetId"]) for e in reversed(entries)]
        assert actions == [
            ("session.create", session_id),
            ("run.start", first_run),
            ("run.follow_up", follow["run"]["id"]),
            ("run.interrupt", follow["run"]["id"]),
        ]
        assert all(e["actor"].startswith("key:") for e in entries)
        assert entries[0]["details"]["statusBefore"] == "QUEUED"
        assert not any(edge["node"]["targetId"] == session_id for edge in other_tenant)

    async def test_the_audit_log_pages_newest_first_and_filters(self, stack: Stack) -> None:
        async with stack.client() as client:
            for i in range(3):
                await start_ok(client, prompt=f"audit page {i}")
            first = (await client.execute(AUDIT, {"first": 2, "filter": {"action": "run.start"}}))["auditLog"]
            second = (
                await client.execute(
                    AUDIT,
                    {"first": 2, "after": first["pageInfo"]["endCursor"], "filter": {"action": "run.start"}},
                )
            )["auditLog"]
        ids = [int(edge["node"]["id"]) for edge in first["edges"] + second["edges"]]
        assert ids == sorted(ids, reverse=True)
        assert len(set(ids)) == len(ids) == 4
        assert first["pageInfo"]["hasNextPage"]
        assert {edge["node"]["action"] for edge in first["edges"] + second["edges"]} == {"run.start"}


async def _audit_of(stack: Stack, key: str) -> dict[str, object]:
    async with stack.client(key) as client:
        return await client.execute(AUDIT, {"first": 100})


class TestLimitsAndMetrics:
    async def test_an_oversized_body_is_413_and_the_server_goes_on(self, stack: Stack) -> None:
        huge = "x" * (stack.settings.max_request_bytes + 1)
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            response = await http.post(
                "/graphql",
                json={
                    "query": "mutation($p: String!) { startRun(input: {prompt: $p}) { __typename } }",
                    "variables": {"p": huge},
                },
                headers={"Authorization": f"Bearer {stack.key}"},
            )
        assert response.status_code == 413
        async with stack.client() as client:
            assert "sessions" in await client.execute(SESSIONS)

    async def test_runs_and_events_are_counted(self, stack: Stack) -> None:
        async with stack.client() as client:
            started = await start_ok(client, prompt="count me")
            await wait_for_run(client, started["run"]["id"])
        async with httpx.AsyncClient(base_url=stack.api.base_url, trust_env=False) as http:
            text = (await http.get("/metrics")).text
        for name in (
            "agent_runs_started_total",
            'agent_runs_finished_total{status="COMPLETED"}',
            "agent_events_appended_total",
            "agent_run_duration_seconds_bucket",
        ):
            assert name in text, name
