"""Warm pool benchmark: a new session's first answer from the pool vs a cold start, side by side.

    .venv/bin/python -m benchmarks.warm_pool [--rounds 8]

One in-process API server (embedded storage, sandbox on, WARM_POOL_SIZE=1) against the scripted model.
Each round starts two new sessions, alternating which goes first:

- cold: startRun with maxTurns set, options no pooled CLI was started with, so the session's CLI starts
  (sandbox, CLI, connect) after the run is admitted;
- pooled: startRun on the default options, which takes the connected CLI waiting in the pool.

Before each start the pool is full and no CLI is starting, so neither measurement shares the CPU with a
refill. Time to first answer is server-stamped: the first AssistantMessage event's createdAt minus the
run's createdAt (both from the same clock, in the log). For reference the bare SDK adapter's cold start
(unconfined, no API: connect, send, first AssistantMessage) is measured in the same rounds, as in
benchmarks/sandbox.py. The machine is shared and noisy: compare the ratios of one run. Results are
printed and written to benchmarks/results/warm-pool-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from api.runtime.sdk_adapter import AgentConnection, AgentSpec
from api.sandbox.launcher import AgentLauncher
from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env
from api.settings import Settings
from tests.conftest import Stack, start_stack
from tests.documents import EVENTS, start_ok, wait_for_run
from tests.support.graphql_http import GraphQLHttpClient

RESULTS = Path(__file__).resolve().parent / "results"
RUN_CREATED = "query($id: ID!) { run(id: $id) { createdAt startedAt } }"


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def _pool_full(stack: Stack, tenant_id: str | None, timeout: float = 120) -> str:
    """Wait until the pool holds its CLI and none is starting; returns the tenant that is warm."""
    pool = stack.api.services.run_manager.warm_pool
    deadline = time.monotonic() + timeout
    while True:
        tenants = [tenant for (tenant, _), entries in pool._ready.items() if entries]
        if pool._starting == 0 and tenants and (tenant_id is None or tenant_id in tenants):
            return tenants[0]
        if time.monotonic() > deadline:
            raise TimeoutError("the warm pool did not fill")
        await asyncio.sleep(0.05)


async def _first_answer(client: GraphQLHttpClient, **fields: Any) -> tuple[float, float]:
    """Seconds from the run's creation to its first AssistantMessage (server-stamped), and of those the
    part until it was admitted (RUNNING)."""
    started = await start_ok(client, **fields)
    run_id, session_id = started["run"]["id"], started["session"]["id"]
    run = await wait_for_run(client, run_id, timeout=120)
    assert run["status"] == "COMPLETED", run
    stamps = (await client.execute(RUN_CREATED, {"id": run_id}))["run"]
    created = _stamp(stamps["createdAt"])
    events = (await client.execute(EVENTS, {"sessionId": session_id, "first": 200}))["events"]
    first = next(e for e in events if e["payload"]["__typename"] == "AssistantMessage")
    return _stamp(first["createdAt"]) - created, _stamp(stamps["startedAt"]) - created


async def _bare_cold(launcher: AgentLauncher) -> tuple[float, float]:
    """The SDK adapter alone, unconfined: connect, send, first AssistantMessage (benchmarks/sandbox.py);
    and of that, the part after connect() returned."""
    session_id = str(uuid.uuid4())
    paths = launcher.paths("bare", session_id)
    launch = launcher.prepare(paths, f"bare-{session_id[:8]}")
    connection = AgentConnection(
        AgentSpec(session_id=session_id, cwd=str(paths.workspace), resume=False, env=launch.env)
    )
    started = time.perf_counter()
    try:
        await connection.connect()
        connected = time.perf_counter()
        outputs = connection.outputs()
        await connection.send("[scenario:echo] hello", str(uuid.uuid4()))
        first = float("nan")
        async for output in outputs:
            if output.kind.value == "assistant" and first != first:
                first = time.perf_counter() - started
            if output.is_result:
                break
        return first, started + first - connected
    finally:
        await connection.close()
        await launcher.release(launch)


async def main(rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"cold": [], "pooled": [], "bare_sdk_cold": []}
    # Of the above: until the run was admitted (API), after connect() returned (bare SDK).
    parts: dict[str, list[float]] = {"cold": [], "pooled": [], "bare_sdk_cold": []}
    with tempfile.TemporaryDirectory(prefix="warm-pool-bench-") as tmp:
        async with ScriptedModelServer() as model:
            stack = await start_stack(
                "embedded",
                Path(tmp) / "api",
                model,
                warm_pool_size=1,
                idle_client_seconds=5.0,
                log_level="WARNING",
            )
            env = {**scripted_model_cli_env(model.base_url), "CLAUDE_CODE_MAX_RETRIES": "0"}
            bare = AgentLauncher(Settings(data_dir=Path(tmp) / "bare", sandbox="off"), env)
            await bare.start()
            try:
                async with stack.client() as client:
                    # Warms the page cache and makes the tenant warm (it started a new session here).
                    await _first_answer(client, prompt="[scenario:echo] warm-up")
                    await _bare_cold(bare)
                    tenant_id = await _pool_full(stack, None)
                    for round_no in range(rounds):
                        order = ["cold", "pooled"] if round_no % 2 == 0 else ["pooled", "cold"]
                        for kind in order:
                            await _pool_full(stack, tenant_id)
                            # maxTurns: options no pooled CLI has, so the session starts its own.
                            extra = {"maxTurns": 9} if kind == "cold" else {}
                            prompt = f"[scenario:echo] {kind}"
                            seconds, part = await _first_answer(client, prompt=prompt, **extra)
                            samples[kind].append(seconds)
                            parts[kind].append(part)
                        await _pool_full(stack, tenant_id)
                        seconds, part = await _bare_cold(bare)
                        samples["bare_sdk_cold"].append(seconds)
                        parts["bare_sdk_cold"].append(part)
                    used = stack.api.services.run_manager.warm_pool
                    assert used.ready == 1
            finally:
                await bare.stop()
                await stack.api.stop()
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    part_medians = {kind: statistics.median(values) for kind, values in parts.items()}
    summary = {
        "rounds": rounds,
        "median_first_answer_s": medians,
        "median_until_admitted_s (API) / after_connect_s (bare SDK)": part_medians,
        "pooled_vs_cold": medians["pooled"] / medians["cold"],
        "pooled_vs_bare_sdk_cold": medians["pooled"] / medians["bare_sdk_cold"],
        "cold_vs_bare_sdk_cold": medians["cold"] / medians["bare_sdk_cold"],
        "samples": samples,
    }
    print(f"{'':16}{'first answer (median)':>24}{'admitted / after connect':>28}")
    for kind, value in medians.items():
        print(f"{kind:16}{value * 1000:>21.0f} ms{part_medians[kind] * 1000:>25.0f} ms")
    print(f"pooled / cold through the API: {summary['pooled_vs_cold']:.2f}x")
    print(f"pooled / bare SDK cold:        {summary['pooled_vs_bare_sdk_cold']:.2f}x")
    print(f"cold / bare SDK cold:          {summary['cold_vs_bare_sdk_cold']:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"warm-pool-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"written to {out}")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    asyncio.run(main(parser.parse_args().rounds))
