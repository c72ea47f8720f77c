"""The usage report, budgets, and a filtered, paged session listing: the real CLI in its sandbox, the
scripted model, on both storage modes."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from api.auth import create_key
from api.scripted_model.server import ScriptedModelServer
from persistence.repositories.runs import RunRepository
from tests.conftest import MODES, Stack, running_stack
from tests.documents import start_ok, wait_for_run
from tests.support.graphql_http import GraphQLHttpClient

OTHER_MODEL = "claude-haiku-4-5"


def fixed(input_tokens: int, output_tokens: int) -> str:
    """A prompt whose one model answer reports this usage (the CLI prices it into the run's cost)."""
    step = {
        "content": [{"type": "text", "text": "fixed"}],
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }
    return "[scenario]" + json.dumps({"steps": [step]})


USAGE = """
query Usage($filter: UsageFilter, $groupBy: [UsageDimension!]) {
  usage(filter: $filter, groupBy: $groupBy) {
    from to groupBy
    buckets { ...Figures }
    total { ...Figures }
  }
}
fragment Figures on UsageBucket {
  day model status runCount costUsd inputTokens outputTokens cacheReadInputTokens cacheCreationInputTokens
}
"""

RUN = "query Run($id: ID!) { run(id: $id) { id status costUsd usage } }"

BUDGET = """
query { budget { dailyBudgetUsd spentTodayUsd resetsAt maxRunBudgetUsd defaultRunBudgetUsd } }
"""

START = """
mutation Start($input: StartRunInput!) {
  startRun(input: $input) {
    __typename
    ... on StartRunSuccess { run { id } session { id } }
    ... on Error { code message }
    ... on PolicyViolationError { rule }
    ... on BudgetExceededError { budgetUsd spentUsd resetsAt }
  }
}
"""

SESSIONS = """
query Sessions($first: Int, $after: String, $filter: SessionFilter) {
  sessions(first: $first, after: $after, filter: $filter) {
    edges { cursor node { id title status } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""

AUDIT_COUNT = "query { auditLog(first: 100) { edges { node { id } } } }"


async def tenant_client(stack: Stack, name: str | None = None) -> GraphQLHttpClient:
    """A client of a tenant of its own, so no other test's runs are in its figures."""
    key = await create_key(stack.api.services.db, tenant_name=name or f"t-{uuid.uuid4().hex[:10]}", name="t")
    return stack.client(key.secret)


async def finished(client: GraphQLHttpClient, **fields: Any) -> dict[str, Any]:
    started = await start_ok(client, **fields)
    run = await wait_for_run(client, started["run"]["id"], timeout=120)
    return {"session_id": started["session"]["id"], **run}


async def run_figures(client: GraphQLHttpClient, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = (await client.execute(RUN, {"id": run_id}))["run"]
    return run


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


class TestUsage:
    async def test_the_buckets_sum_the_runs_own_costs_and_tokens(self, stack: Stack) -> None:
        since = datetime.now(UTC) - timedelta(minutes=1)
        async with await tenant_client(stack) as client, await tenant_client(stack) as stranger:
            first = await finished(client, prompt=fixed(5000, 200))
            second = await finished(client, prompt=fixed(3000, 100), sessionId=first["session_id"])
            third = await finished(client, prompt=fixed(1000, 50), model=OTHER_MODEL)
            failed = await finished(client, prompt="[scenario:error:400]")
            assert [first["status"], second["status"], third["status"]] == ["COMPLETED"] * 3
            assert failed["status"] == "FAILED", failed
            runs = [await run_figures(client, r["id"]) for r in (first, second, third, failed)]
            assert all(r["costUsd"] and r["costUsd"] > 0 for r in runs[:3]), runs

            period = {"from": since.isoformat(), "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}

            async def report(*group_by: str) -> dict[str, Any]:
                data = await client.execute(USAGE, {"filter": period, "groupBy": list(group_by)})
                result: dict[str, Any] = data["usage"]
                return result

            whole = await report()
            assert len(whole["buckets"]) == 1
            total = whole["total"]
            assert total["runCount"] == 4
            assert close(total["costUsd"], sum(r["costUsd"] or 0.0 for r in runs))
            for field, key in (("inputTokens", "input_tokens"), ("outputTokens", "output_tokens")):
                assert total[field] == sum((r["usage"] or {}).get(key, 0) for r in runs), (field, runs)
            assert total["inputTokens"] >= 9000
            assert total["outputTokens"] >= 350
            assert whole["buckets"][0] == total

            by_status = {b["status"]: b for b in (await report("STATUS"))["buckets"]}
            assert set(by_status) == {"COMPLETED", "FAILED"}
            assert by_status["COMPLETED"]["runCount"] == 3
            assert close(by_status["COMPLETED"]["costUsd"], sum(r["costUsd"] for r in runs[:3]))
            assert by_status["FAILED"]["runCount"] == 1
            assert by_status["COMPLETED"]["day"] is None
            assert by_status["COMPLETED"]["model"] is None

            by_model = {b["model"]: b for b in (await report("MODEL"))["buckets"]}
            assert by_model[OTHER_MODEL]["runCount"] == 1
            assert close(by_model[OTHER_MODEL]["costUsd"], runs[2]["costUsd"])
            assert by_model[OTHER_MODEL]["inputTokens"] == runs[2]["usage"]["input_tokens"]
            assert sum(b["runCount"] for b in by_model.values()) == 4

            by_day = (await report("DAY", "STATUS", "DAY"))["buckets"]
            days = {b["day"] for b in by_day}
            assert days <= {since.date().isoformat(), datetime.now(UTC).date().isoformat()}
            assert sum(b["runCount"] for b in by_day) == 4
            assert close(sum(b["costUsd"] for b in by_day), total["costUsd"])
            assert (await report("DAY", "STATUS", "DAY"))["groupBy"] == ["DAY", "STATUS"]

            # Before the runs: nothing; another tenant: nothing.
            earlier = {"from": (since - timedelta(days=2)).isoformat(), "to": since.isoformat()}
            empty = (await client.execute(USAGE, {"filter": earlier, "groupBy": ["DAY"]}))["usage"]
            assert empty["buckets"] == []
            assert empty["total"]["runCount"] == 0
            theirs = (await stranger.execute(USAGE, {"filter": period, "groupBy": []}))["usage"]
            assert theirs["buckets"] == []
            assert theirs["total"]["costUsd"] == 0

            # The default period is the last 30 days up to now, and holds the runs.
            default = (await client.execute(USAGE, {}))["usage"]
            assert default["total"]["runCount"] == 4
            span = datetime.fromisoformat(default["to"]) - datetime.fromisoformat(default["from"])
            assert span == timedelta(days=30)

            too_long = {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
            backwards = {"from": period["to"], "to": period["from"]}
            # A period ending on the calendar's first day has no default start (found by the fuzzer).
            first_day = {"to": "0001-01-01T00:00:00.000001+00:00"}
            for wrong in (backwards, too_long, {"from": "2026-01-01T00:00:00"}, first_day):
                body = (await client.execute_raw(USAGE, {"filter": wrong})).json()
                assert body["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR", body


class TestListing:
    async def test_a_filtered_paged_listing(self, stack: Stack) -> None:
        async with await tenant_client(stack) as client, await tenant_client(stack) as stranger:
            titles = ["Alpha one", "Beta", "alpha two", "gamma", "ALPHA three", "alphabet % soup"]
            ids = {}
            for title in titles:
                done = await finished(client, prompt="hello", title=title)
                ids[title] = done["session_id"]

            async def page(**variables: Any) -> dict[str, Any]:
                data: dict[str, Any] = (await client.execute(SESSIONS, variables))["sessions"]
                return data

            search = {"titleContains": "alpha", "status": "IDLE"}
            one = await page(first=2, filter=search)
            newest_first = [ids["alphabet % soup"], ids["ALPHA three"], ids["alpha two"], ids["Alpha one"]]
            assert [e["node"]["id"] for e in one["edges"]] == newest_first[:2]
            assert one["pageInfo"] == {
                "hasNextPage": True,
                "hasPreviousPage": False,
                "startCursor": one["edges"][0]["cursor"],
                "endCursor": one["edges"][1]["cursor"],
            }
            two = await page(first=2, after=one["pageInfo"]["endCursor"], filter=search)
            assert [e["node"]["id"] for e in two["edges"]] == newest_first[2:]
            assert two["pageInfo"]["hasPreviousPage"] is True
            assert two["pageInfo"]["hasNextPage"] is False
            assert two["pageInfo"]["startCursor"] == two["edges"][0]["cursor"]
            newest = one["edges"][0]["cursor"]
            rest = await page(first=10, after=newest, filter={"titleContains": "ALPHA"})
            assert [e["node"]["id"] for e in rest["edges"]] == newest_first[1:]
            assert rest["pageInfo"]["hasPreviousPage"] is True
            # Before a cursor only sessions that match the filter count: newer non-matches do not.
            everything = await page(first=100)
            beta = next(e["cursor"] for e in everything["edges"] if e["node"]["title"] == "Beta")
            older = await page(first=10, after=beta, filter={"titleContains": "alpha ONE"})
            assert [e["node"]["id"] for e in older["edges"]] == [ids["Alpha one"]]
            assert older["pageInfo"]["hasPreviousPage"] is False
            newer = await page(first=10, after=beta, filter={"titleContains": "gamma"})
            assert newer["edges"] == []
            assert newer["pageInfo"]["hasPreviousPage"] is True
            first_match = await page(first=10, filter={"titleContains": "% s"})
            assert [e["node"]["id"] for e in first_match["edges"]] == [ids["alphabet % soup"]]
            assert (await page(filter={"titleContains": "alpha", "status": "RUNNING"}))["edges"] == []
            none = await page(filter={"titleContains": "zzz"})
            assert none["edges"] == []
            assert none["pageInfo"]["startCursor"] is None
            # The filter does not reach another tenant's sessions.
            theirs = (await stranger.execute(SESSIONS, {"filter": {"titleContains": "alpha"}}))["sessions"]
            assert theirs["edges"] == []


@pytest.fixture(params=MODES)
async def budget_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    """A stack with budgets: 0.001 USD a day and runs of at most 2 USD (1 by default); the policy file
    gives tenant-b no daily budget and runs of at most 0.5 USD."""
    mode = request.param
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tenants": {"tenant-b": {"dailyBudgetUsd": None, "maxRunBudgetUsd": 0.5}}}))
    async with running_stack(
        mode,
        tmp_path / "data",
        scripted_model,
        "caga_budget",
        tenant_daily_budget_usd=0.001,
        max_run_budget_usd=2.0,
        default_run_budget_usd=1.0,
        policy_file=policy,
    ) as running:
        yield running


async def stored_budget(stack: Stack, run_id: str) -> float | None:
    async with stack.api.services.db.session() as session:
        run = await RunRepository(session).get(run_id)
    assert run is not None
    value: float | None = run.options["max_budget_usd"]
    return value


class TestBudgets:
    async def test_a_spent_daily_budget_refuses_runs_and_creates_nothing(self, budget_stack: Stack) -> None:
        stack = budget_stack
        async with stack.client() as a, stack.client(stack.other_key) as b:
            before = (await a.execute(BUDGET))["budget"]
            assert before["dailyBudgetUsd"] == 0.001
            assert before["spentTodayUsd"] == 0
            assert before["maxRunBudgetUsd"] == 2.0
            assert before["defaultRunBudgetUsd"] == 1.0

            # Per run: above the cap is refused; nothing asked gets the default, which the SDK receives.
            over = (await a.execute(START, {"input": {"prompt": "x", "maxBudgetUsd": 2.5}}))["startRun"]
            assert over["__typename"] == "PolicyViolationError", over
            assert over["rule"] == "deployment.max_run_budget_usd"
            done = await finished(a, prompt=fixed(5000, 200))
            assert done["status"] == "COMPLETED", done
            assert await stored_budget(stack, done["id"]) == 1.0
            cost = (await run_figures(a, done["id"]))["costUsd"]
            assert cost > 0.001

            spent = (await a.execute(BUDGET))["budget"]
            assert close(spent["spentTodayUsd"], cost)
            audit_before = len((await a.execute(AUDIT_COUNT))["auditLog"]["edges"])
            sessions_before = (await a.execute(SESSIONS, {"first": 100}))["sessions"]["edges"]

            for fields in ({}, {"sessionId": done["session_id"]}):
                refused = (await a.execute(START, {"input": {"prompt": "more", **fields}}))["startRun"]
                assert refused["__typename"] == "BudgetExceededError", refused
                assert refused["code"] == "BUDGET_EXCEEDED"
                assert refused["budgetUsd"] == 0.001
                assert close(refused["spentUsd"], cost)
                midnight = (datetime.now(UTC) + timedelta(days=1)).replace(
                    hour=0, minute=0, second=0, microsecond=0
                )
                resets = datetime.fromisoformat(refused["resetsAt"])
                # The next midnight UTC (the day may have turned between the run and this check).
                assert resets in {midnight, midnight - timedelta(days=1)}, refused
                assert resets > datetime.now(UTC) - timedelta(minutes=5)
            # Nothing was created: no session, no run, no audit entry.
            assert (await a.execute(SESSIONS, {"first": 100}))["sessions"]["edges"] == sessions_before
            assert len((await a.execute(AUDIT_COUNT))["auditLog"]["edges"]) == audit_before
            runs = await a.execute(USAGE, {})
            assert runs["usage"]["total"]["runCount"] == 1

            # tenant-b's policy entry: no daily budget, runs of at most 0.5 USD (also the default).
            assert (await b.execute(BUDGET))["budget"]["dailyBudgetUsd"] is None
            over = (await b.execute(START, {"input": {"prompt": "x", "maxBudgetUsd": 1.0}}))["startRun"]
            assert over["__typename"] == "PolicyViolationError", over
            assert over["rule"] == "tenant tenant-b.max_run_budget_usd"
            for _ in range(2):
                other = await finished(b, prompt=fixed(5000, 200))
                assert other["status"] == "COMPLETED", other
            assert await stored_budget(stack, other["id"]) == 0.5
            asked = await finished(b, prompt="hello", maxBudgetUsd=0.25)
            assert await stored_budget(stack, asked["id"]) == 0.25
            assert (await b.execute(BUDGET))["budget"]["spentTodayUsd"] > 0.001


RESULT = "query Run($id: ID!) { run(id: $id) { status costUsd result { subtype isError totalCostUsd } } }"


@pytest.mark.parametrize("special_stack", [{"default_run_budget_usd": 0.0001}], indirect=True)
async def test_the_default_run_budget_reaches_the_agent(special_stack: Stack) -> None:
    """A run that asks for no budget gets DEFAULT_RUN_BUDGET_USD, and the agent itself enforces it: a turn
    that costs more ends with error_max_budget_usd."""
    async with special_stack.client() as client:
        started = await start_ok(client, prompt=fixed(5000, 200))
        await wait_for_run(client, started["run"]["id"], timeout=120)
        run = (await client.execute(RESULT, {"id": started["run"]["id"]}))["run"]
        assert run["result"]["subtype"] == "error_max_budget_usd", run
        assert run["costUsd"] > 0.0001
        assert await stored_budget(special_stack, started["run"]["id"]) == 0.0001


@pytest.mark.parametrize("special_stack", [{"default_run_budget_usd": 0.03}], indirect=True)
async def test_the_run_budget_is_each_runs_own_not_the_sessions(special_stack: Stack) -> None:
    """Turns of one session that each cost less than the budget, but together more, all complete: the
    agent's limit is on its running total, so each run gets a connection that leaves it its whole budget
    (and its cost stays its own)."""
    async with special_stack.client() as client:
        first = await finished(client, prompt=fixed(5000, 200))
        assert first["status"] == "COMPLETED", first
        cost = (await run_figures(client, first["id"]))["costUsd"]
        assert 0.015 < cost < 0.03, cost
        for _ in range(2):
            more = await finished(client, prompt=fixed(5000, 200), sessionId=first["session_id"])
            run = (await client.execute(RESULT, {"id": more["id"]}))["run"]
            assert run["result"]["subtype"] == "success", run
            assert close(run["costUsd"], cost), (run, cost)
