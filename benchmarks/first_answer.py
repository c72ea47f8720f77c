"""Time to first answer: through the API against the bare SDK set up alike, side by side in one invocation.

    .venv/bin/python -m benchmarks.first_answer [--rounds 8] [--follow-ups 3]

The bare SDK: a new `ClaudeSDKClient` per session with fresh config and working directories, no setting
sources, unconfined, against a scripted model on loopback; its follow-up is the next `query()` on the
same client, whose message stream stays open. Through the API: a chat frontend's view of the same work,
with the WebSocket already open (as a frontend keeps it). Each sample takes:

- cold: a new session (the API starts a sandboxed CLI for it, or takes one from the warm pool): `startRun`
  over HTTP, then the session's `sessionEvents` subscription, until the first AssistantMessage arrives;
- follow-up (the target's figure, issue 10: at most 1.1x the bare SDK's follow-up): the next turn of that
  session on its live CLI, timed from `startRun` to its AssistantMessage arriving on the subscription the
  cold turn opened and kept open, as a chat frontend keeps it (the bare SDK's stream stays open too);
- follow-up, new subscription with afterSeq: the same, but the client opens a new `sessionEvents`
  subscription after `startRun` answers, resuming with `afterSeq` = the last seq it saw (docs/api.md).
  It pays for a subscription's start (authorisation, the live channel, a read of the log) on every turn;
  shown for what it costs, not the target.

Every follow-up, the bare SDK's too, goes out after the same pause: once the machine is quiet again after
the turn before (between_turns). Both follow-up columns are divided by the same bare SDK follow-up. With
`--follow-ups N`, a session makes N follow-ups of each kind (the kept-open ones first, then the
re-subscribing ones) and a sample's figure per column is their median.

The API's servers and the bare SDK call the same scripted model, which runs in this process: a model API
is remote in production, so a server's own `--scripted-model` (on the server's event loop) would charge
the API for serving the model too.

Configurations, interleaved round by round so the machine's noise hits them alike: the bare SDK; the
embedded default; PostgreSQL + Redis (when they run here); and the embedded default with a warm pool
(`WARM_POOL_SIZE`; the pool refills between rounds). The machine is shared and noisy: compare the ratios.

    .venv/bin/python -m benchmarks.first_answer --compare main [--rounds 8]

runs each API configuration twice in the same rounds, on another revision's server (checked out in a
temporary git worktree, run on this tree's virtualenv) and on this tree's, and adds the ratios of this
tree's medians to the revision's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from claude_agent_sdk import AssistantMessage, ClaudeAgentOptions, ClaudeSDKClient, ResultMessage

from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env
from benchmarks.revisions import checkout, server_command
from tests.documents import start_ok, wait_for_run
from tests.support.cluster import Cluster, cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import GraphQLWSClient, Subscription
from tests.support.servers import postgres_available, redis_available

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "[scenario:echo] hello"
FOLLOW_UP = "[scenario:echo] again"
WATCH = """
subscription First($sessionId: ID!, $afterSeq: Int = 0) {
  sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq) { seq runId payload { __typename } }
}"""
BARE = "bare SDK"
THIS_TREE = "this tree"
# The live-agents gauge of the warm pool (api/runtime metrics).
WARM_METRIC = 'agent_live_clis{state="warm"}'
READY_METRIC = 'agent_warm_pool_started_total{outcome="ready"}'
USED_METRIC = "agent_warm_pool_used_total"


@dataclass
class Sample:
    configuration: str
    cold_s: float
    # On the subscription kept open since the cold turn (the bare SDK: its open stream).
    follow_up_s: float
    # On a new subscription per turn, resuming with afterSeq (the bare SDK: its follow-up again).
    follow_up_resubscribe_s: float


@dataclass
class Summary:
    configuration: str
    samples: int
    cold_median_s: float
    follow_up_median_s: float
    cold_ratio: float
    # The target's ratio (issue 10): the kept-open follow-up over the bare SDK's follow-up.
    follow_up_ratio: float
    follow_up_resubscribe_median_s: float
    follow_up_resubscribe_ratio: float


Measure = Callable[[], Awaitable[Sample]]


def bare_sdk(model_url: str, work: Path, follow_ups: int = 1) -> Measure:
    async def measure() -> Sample:
        cwd = Path(tempfile.mkdtemp(prefix="ws-", dir=work))
        config = Path(tempfile.mkdtemp(prefix="cfg-", dir=work))
        options = ClaudeAgentOptions(
            cwd=str(cwd),
            env={**scripted_model_cli_env(model_url), "CLAUDE_CONFIG_DIR": str(config)},
            setting_sources=[],
        )
        client = ClaudeSDKClient(options)
        started = time.perf_counter()
        await client.connect()
        try:
            await client.query(PROMPT)
            cold = await _first_answer(client, started)
            times = []
            for _ in range(follow_ups):
                # As through the API: a follow-up comes after a pause (see between_turns).
                await between_turns()
                started = time.perf_counter()
                await client.query(FOLLOW_UP)
                times.append(await _first_answer(client, started))
        finally:
            await client.disconnect()
        follow = statistics.median(times)
        # One follow-up figure: the SDK's stream is always open, there is nothing to re-subscribe.
        return Sample(BARE, cold, follow, follow)

    return measure


async def _first_answer(client: ClaudeSDKClient, started: float) -> float:
    first = None
    async for message in client.receive_response():
        if first is None and isinstance(message, AssistantMessage):
            first = time.perf_counter() - started
        if isinstance(message, ResultMessage):
            break
    assert first is not None, "the turn ended without an AssistantMessage"
    return first


def through_api(
    name: str, c: Cluster, http: GraphQLHttpClient, ws: GraphQLWSClient, follow_ups: int = 1
) -> Measure:
    async def answer(sub: Subscription, seen: set[str], last_seq: list[int]) -> float:
        """When the first AssistantMessage of a run not in `seen` (the session's earlier runs) arrives;
        `last_seq` keeps the highest seq read."""
        async for payload in sub:
            event = payload["data"]["sessionEvents"]
            last_seq[0] = max(last_seq[0], event["seq"])
            if event["payload"]["__typename"] == "AssistantMessage" and event["runId"] not in seen:
                return time.perf_counter()
        raise AssertionError("the subscription ended before the answer")

    async def cold(sub_stack: AsyncExitStack) -> tuple[str, str, Subscription, float]:
        started = time.perf_counter()
        result = await start_ok(http, prompt=PROMPT)
        session_id = result["session"]["id"]
        sub = await sub_stack.enter_async_context(await ws.subscribe(WATCH, {"sessionId": session_id}))
        arrived = await answer(sub, set(), [0])
        return session_id, result["run"]["id"], sub, arrived - started

    async def kept_open(session_id: str, sub: Subscription, seen: set[str], last_seq: list[int]) -> float:
        """startRun while the subscription opened for the cold turn keeps reading (as a frontend's does)."""
        await between_turns()
        started = time.perf_counter()
        # The answer may arrive before startRun's HTTP response: read the socket meanwhile.
        waiting = asyncio.ensure_future(answer(sub, seen, last_seq))
        try:
            result = await start_ok(http, prompt=FOLLOW_UP, sessionId=session_id)
            arrived = await waiting
        finally:
            waiting.cancel()
        seen.add(result["run"]["id"])
        await wait_for_run(http, result["run"]["id"])
        return arrived - started

    async def resubscribed(session_id: str, seen: set[str], last_seq: list[int]) -> float:
        """startRun, then a new subscription resuming after the last seq this client saw."""
        await between_turns()
        started = time.perf_counter()
        result = await start_ok(http, prompt=FOLLOW_UP, sessionId=session_id)
        async with await ws.subscribe(WATCH, {"sessionId": session_id, "afterSeq": last_seq[0]}) as sub:
            arrived = await answer(sub, seen, last_seq)
        seen.add(result["run"]["id"])
        await wait_for_run(http, result["run"]["id"])
        return arrived - started

    async def measure() -> Sample:
        async with AsyncExitStack() as subs:
            session_id, run_id, sub, cold_s = await cold(subs)
            seen, last_seq = {run_id}, [0]
            await wait_for_run(http, run_id)
            kept = [await kept_open(session_id, sub, seen, last_seq) for _ in range(follow_ups)]
        # The kept-open subscription is closed: the re-subscribing client has one at a time.
        again = [await resubscribed(session_id, seen, last_seq) for _ in range(follow_ups)]
        return Sample(name, cold_s, statistics.median(kept), statistics.median(again))

    return measure


@asynccontextmanager
async def api_client(c: Cluster) -> AsyncIterator[tuple[GraphQLHttpClient, GraphQLWSClient]]:
    async with GraphQLHttpClient(c.replicas[0].base_url, c.key) as http:
        ws = await GraphQLWSClient.open(c.replicas[0].ws_url, token=c.key)
        try:
            yield http, ws
        finally:
            await ws.close()


async def has_metric(c: Cluster, name: str) -> bool:
    async with httpx.AsyncClient(trust_env=False) as http:
        return name in (await http.get(f"{c.replicas[0].base_url}/metrics")).text


async def wait_pool_full(c: Cluster, size: int, timeout: float = 60) -> None:
    """Until the replica has `size` pooled CLIs ready (the pool refills in the background). Counted as
    started-and-ready minus used: the live-CLI gauge also counts a pooled CLI still starting, which would
    let a round begin while that start still takes the cores."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        ready = await c.metric(c.replicas[0], READY_METRIC)
        if ready - await c.metric(c.replicas[0], USED_METRIC) >= size:
            return
        await asyncio.sleep(0.2)
    print(f"  the warm pool did not refill to {size} within {timeout:g} s", flush=True)


async def main(rounds: int, warm_pool: int, compare: str | None = None, follow_ups: int = 1) -> list[Sample]:
    work = Path(tempfile.mkdtemp(prefix="caga-first-answer-"))
    quiet = {"LOG_LEVEL": "WARNING", "RATE_LIMIT_REQUESTS_PER_SECOND": "0"}
    samples: list[Sample] = []
    async with AsyncExitStack() as stack:
        model = await stack.enter_async_context(ScriptedModelServer())
        configurations: dict[str, Measure] = {BARE: bare_sdk(model.base_url, work, follow_ups)}
        pooled: list[Cluster] = []
        setups: list[tuple[str, dict[str, Any]]] = [("API, embedded", {"embedded": True, "env": quiet})]
        if postgres_available() and redis_available():
            setups.append(("API, pg+redis", {"replicas": 1, "env": quiet}))
        if warm_pool:
            env = {**quiet, "WARM_POOL_SIZE": str(warm_pool)}
            setups.append(("API, embedded, warm pool", {"embedded": True, "env": env}))
        # Each API configuration once per side: the revision's server (on this tree's virtualenv) and
        # this tree's, measured in the same rounds.
        sides: list[tuple[str, list[str] | None]] = [("", None)]
        if compare is not None:
            baseline = await stack.enter_async_context(checkout(compare))
            sides = [(f" [{compare}]", server_command(baseline)), (f" [{THIS_TREE}]", None)]
        for setup, kwargs in setups:
            for suffix, command in sides:
                name = setup + suffix
                directory = work / name.replace(" ", "_").replace("[", "").replace("]", "")
                # The same scripted model as the bare SDK's, in this process: a server's own scripted
                # model would share its event loop with the API's work, as no real model API does.
                c = await stack.enter_async_context(
                    cluster(directory, command=command, model_url=model.base_url, **kwargs)
                )
                http, ws = await stack.enter_async_context(api_client(c))
                if "warm pool" in name:
                    if not await has_metric(c, WARM_METRIC):
                        print(
                            f"  {name}: the server reports no {WARM_METRIC}; no warm pool to measure",
                            flush=True,
                        )
                        continue
                    pooled.append(c)
                configurations[name] = through_api(name, c, http, ws, follow_ups)
        for measure in configurations.values():  # page cache, connection pools, JIT of the CLI
            await measure()
        names = list(configurations)
        for round_no in range(rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            if round_no % 2:
                # Each configuration runs after each neighbour as often as before it: what one leaves
                # behind (a pool's refill finishing, an idle CLI) must not always land on the same other.
                order.reverse()
            for name in order:
                # Before every sample, not once a round: a pool refilling after its take starts a CLI,
                # which would take the cores from whichever configuration runs next.
                for c in pooled:
                    await wait_pool_full(c, warm_pool)
                await settle()
                sample = await configurations[name]()
                samples.append(sample)
                print(
                    f"  round {round_no + 1}: {name}: cold {sample.cold_s:.3f} s, "
                    f"follow-up {sample.follow_up_s:.3f} s, "
                    f"new subscription {sample.follow_up_resubscribe_s:.3f} s",
                    flush=True,
                )
    return samples


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all the machine's CPUs."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


async def settle(busy_share: float = 0.15, window: float = 0.05, longest: float = 3.0) -> None:
    """Until the machine is quiet (two windows in a row under `busy_share` of all its CPUs), at most
    `longest` seconds. What a sample leaves running (its server committing and announcing the turn's
    end, its idle CLI's own after-turn work) otherwise lands on the next sample: with the rounds' order
    alone, a sample that came right after the bare SDK ran 0.1-0.2 s faster cold than one right after an
    API configuration, and identical code on both sides of --compare measured 1.58x and 0.71x
    (2026-11-28)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + longest
    quiet = 0
    busy, total = _cpu_times()
    while quiet < 2 and loop.time() < deadline:
        await asyncio.sleep(window)
        now_busy, now_total = _cpu_times()
        share = (now_busy - busy) / max(1, now_total - total)
        busy, total = now_busy, now_total
        quiet = quiet + 1 if share < busy_share else 0


async def between_turns() -> None:
    """The pause before every follow-up, on every side alike: the machine quiet again (settle), as it is
    when a person reads an answer before sending the next prompt. Without it the bare SDK's follow-up
    went out the moment its ResultMessage arrived, while the API's waited for its run to be reported
    finished (HTTP round trips): the bare CLI then answered from caches still warm from its last turn.
    Measured on the bare SDK alone, 8 interleaved rounds (2026-11-28): follow-ups right after the last
    turn 29-30 ms, after a 0.1 s pause and a settle 44-53 ms, after 1 s 39-46 ms."""
    await settle()


def summarise(samples: list[Sample]) -> list[Summary]:
    by_name: dict[str, list[Sample]] = {}
    for sample in samples:
        by_name.setdefault(sample.configuration, []).append(sample)
    base_cold = statistics.median(s.cold_s for s in by_name[BARE])
    # Both follow-up columns over the bare SDK's one follow-up figure.
    base_follow = statistics.median(s.follow_up_s for s in by_name[BARE])
    out = []
    for name, rows in by_name.items():
        cold = statistics.median(s.cold_s for s in rows)
        follow = statistics.median(s.follow_up_s for s in rows)
        again = statistics.median(s.follow_up_resubscribe_s for s in rows)
        out.append(
            Summary(
                name,
                len(rows),
                round(cold, 3),
                round(follow, 3),
                round(cold / base_cold, 2),
                round(follow / base_follow, 2),
                round(again, 3),
                round(again / base_follow, 2),
            )
        )
    return out


def report(summaries: list[Summary]) -> str:
    """Medians and ratios to the bare SDK. "follow-up": on the subscription kept open since the cold turn
    (the target's ratio); "new sub": on a new subscription per turn with afterSeq."""
    header = (
        f"{'configuration':40} {'n':>3} {'cold s':>8} {'x bare':>7} {'follow-up s':>12} {'x bare':>7}"
        f" {'new sub s':>10} {'x bare':>7}"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        lines.append(
            f"{s.configuration:40} {s.samples:>3} {s.cold_median_s:>8.3f} {s.cold_ratio:>7.2f} "
            f"{s.follow_up_median_s:>12.3f} {s.follow_up_ratio:>7.2f}"
            f" {s.follow_up_resubscribe_median_s:>10.3f} {s.follow_up_resubscribe_ratio:>7.2f}"
        )
    lines.append(
        "follow-up: on the subscription kept open since the cold turn (target: <= 1.1x); "
        "new sub: a new subscription per turn, with afterSeq"
    )
    return "\n".join(lines)


def compared(summaries: list[Summary], ref: str) -> str:
    """Per API configuration: this tree's medians over the revision's (lower is better)."""
    by_name = {s.configuration: s for s in summaries}
    header = f"{'this tree / ' + ref:36} {'cold':>6} {'follow-up':>10} {'new sub':>8}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        if not s.configuration.endswith(f" [{THIS_TREE}]"):
            continue
        setup = s.configuration.removesuffix(f" [{THIS_TREE}]")
        before = by_name.get(f"{setup} [{ref}]")
        if before is None:
            continue
        lines.append(
            f"{setup:36} {s.cold_median_s / before.cold_median_s:>6.2f} "
            f"{s.follow_up_median_s / before.follow_up_median_s:>10.2f} "
            f"{s.follow_up_resubscribe_median_s / before.follow_up_resubscribe_median_s:>8.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warm-pool", type=int, default=2, help="WARM_POOL_SIZE of the pooled configuration")
    parser.add_argument(
        "--compare", metavar="REF", help="measure this git revision's server beside this tree's"
    )
    parser.add_argument(
        "--follow-ups",
        type=int,
        default=1,
        help="follow-up turns per session of each kind (kept-open, re-subscribing); a round's figure per "
        "column is their median",
    )
    args = parser.parse_args()
    results = asyncio.run(main(args.rounds, args.warm_pool, args.compare, args.follow_ups))
    summaries = summarise(results)
    print(report(summaries))
    if args.compare:
        print()
        print(compared(summaries, args.compare))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"first-answer-{datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {"summary": [asdict(s) for s in summaries], "samples": [asdict(s) for s in results]}, indent=2
        )
    )
    print(f"\nwritten to {out}")
