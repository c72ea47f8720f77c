"""Rate limits and quotas as a client meets them: RateLimitedError from startRun, 429 on HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from api.auth import create_key
from tests.conftest import Stack
from tests.documents import INTERRUPT_RUN, start_ok, start_run


def assert_rate_limited(result: dict[str, Any]) -> None:
    assert result["__typename"] == "RateLimitedError", result
    assert result["code"] == "RATE_LIMITED"
    assert 0 < result["retryAfterSeconds"] <= 60


async def count_sessions(stack: Stack, key: str) -> int:
    async with stack.client(key) as client:
        data = await client.execute("{ sessions(first: 100) { edges { node { id } } } }")
    return len(data["sessions"]["edges"])


@pytest.mark.parametrize("limits", [{"rate_limit_runs_per_minute_per_key": 2}])
async def test_runs_per_minute_per_key(limited_stack: Stack) -> None:
    async with limited_stack.client() as client, limited_stack.client(limited_stack.other_key) as other:
        await start_ok(client, prompt="one")
        await start_ok(client, prompt="two")
        refused = await start_run(client, prompt="three")
        elsewhere = await start_run(other, prompt="another tenant's key")
    assert_rate_limited(refused)
    assert elsewhere["__typename"] == "StartRunSuccess"
    # Nothing of the refused start was written.
    assert await count_sessions(limited_stack, limited_stack.key) == 2


@pytest.mark.parametrize("limits", [{"rate_limit_runs_per_minute_per_tenant": 3}])
async def test_runs_per_minute_per_tenant_counts_all_its_keys(limited_stack: Stack) -> None:
    second = await create_key(limited_stack.api.services.db, tenant_name="tenant-a", name="second")
    async with limited_stack.client() as client, limited_stack.client(second.secret) as client2:
        await start_ok(client, prompt="one")
        await start_ok(client, prompt="two")
        await start_ok(client2, prompt="three")
        refused = await start_run(client2, prompt="four")
    assert_rate_limited(refused)


@pytest.mark.parametrize("limits", [{"max_active_runs_per_tenant": 2}])
async def test_queued_and_running_runs_per_tenant_are_bounded(limited_stack: Stack) -> None:
    # The stack executes no runs: each one stays QUEUED until interrupted.
    async with limited_stack.client() as client, limited_stack.client(limited_stack.other_key) as other:
        first = await start_ok(client, prompt="one")
        await start_ok(client, prompt="two", sessionId=first["session"]["id"])
        refused = await start_run(client, prompt="three")
        elsewhere = await start_run(other, prompt="another tenant")
        aborted = await client.execute(INTERRUPT_RUN, {"runId": first["run"]["id"]})
        again = await start_run(client, prompt="three, again")
    assert_rate_limited(refused)
    assert "2 runs queued or running" in refused["message"]
    assert elsewhere["__typename"] == "StartRunSuccess"
    assert aborted["interruptRun"]["outcome"] == "ABORTED"
    assert again["__typename"] == "StartRunSuccess"


@pytest.mark.parametrize("limits", [{"max_active_runs_per_tenant": 3}])
async def test_concurrent_starts_never_exceed_the_bound(limited_stack: Stack) -> None:
    async with limited_stack.client() as client:
        results = await asyncio.gather(*(start_run(client, prompt=f"racer {i}") for i in range(8)))
    kinds = sorted(result["__typename"] for result in results)
    assert kinds == ["RateLimitedError"] * 5 + ["StartRunSuccess"] * 3, results


@pytest.mark.parametrize("limits", [{"rate_limit_requests_per_second": 1}])
async def test_too_many_requests_get_429_with_retry_after(limited_stack: Stack) -> None:
    query = "{ sessions(first: 1) { edges { cursor } } }"
    refused = REGISTRY.get_sample_value("agent_rate_limited_total", {"limit": "requests"}) or 0.0
    async with limited_stack.client() as client, limited_stack.client(limited_stack.other_key) as other:
        # One request per second (a burst of one) is allowed: a handful in a row meets the limit unless
        # each took a second, and 30 of them would take half a minute.
        for _ in range(30):
            response = await client.execute_raw(query)
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
        other_response = await other.execute_raw(query)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 2
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 0 < body["errors"][0]["extensions"]["retryAfterSeconds"] <= 1
    assert other_response.status_code == 200
    # The server runs in this process: its metrics are this registry's.
    assert REGISTRY.get_sample_value("agent_rate_limited_total", {"limit": "requests"}) == refused + 1


@pytest.mark.parametrize("limits", [{"max_queued_runs_per_tenant": 2}])
async def test_queued_runs_per_tenant_are_bounded_and_show_their_position(limited_stack: Stack) -> None:
    # The stack executes no runs: every run waits QUEUED, in the order it was started.
    position = "query($id: ID!) { run(id: $id) { status queuePosition } }"
    async with limited_stack.client() as client, limited_stack.client(limited_stack.other_key) as other:
        first = await start_ok(client, prompt="one")
        theirs = await start_ok(other, prompt="another tenant's")
        second = await start_ok(client, prompt="two")
        refused = await start_run(client, prompt="three")
        positions = [
            (await client.execute(position, {"id": started["run"]["id"]}))["run"]
            for started in (first, second)
        ]
        aborted = await client.execute(INTERRUPT_RUN, {"runId": first["run"]["id"]})
        moved_up = (await other.execute(position, {"id": theirs["run"]["id"]}))["run"]
        finished = (await client.execute(position, {"id": first["run"]["id"]}))["run"]
        again = await start_run(client, prompt="three, again")
    assert_rate_limited(refused)
    assert "2 runs waiting in the queue" in refused["message"]
    # The queue is the deployment's: the other tenant's run stands between the two.
    assert positions == [{"status": "QUEUED", "queuePosition": 1}, {"status": "QUEUED", "queuePosition": 3}]
    assert aborted["interruptRun"]["outcome"] == "ABORTED"
    assert moved_up == {"status": "QUEUED", "queuePosition": 1}
    assert finished == {"status": "INTERRUPTED", "queuePosition": None}
    assert again["__typename"] == "StartRunSuccess"
