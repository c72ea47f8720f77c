"""Read benchmark: latency of the main queries at a fixed request rate, with and without the read caches.

    .venv/bin/python -m benchmarks.reads [--sessions 1000] [--events-per-session 100] [--rate 20]
                                         [--seconds 6] [--ladder 10,20,40,...]

Seeds a database with `--sessions` sessions of one tenant (two runs each) and `--events-per-session`
events each (~100,000 in all by default), written straight through SQL for speed; then starts the real
server (`claude-agent-api serve`, a subprocess) on it, on the embedded default and on PostgreSQL + Redis,
each time twice: with the caches (the defaults) and without (`AUTH_CACHE_SECONDS=0`,
`GRAPHQL_DOCUMENT_CACHE_SIZE=0`). Rate limits are off, the server executes no runs.

Per configuration, in the same invocation (this machine is shared and noisy: compare the rows):

- at `--rate` requests/s for `--seconds`, p50/p95/p99 of each query: `session` (with its runs and
  checkpoints), `sessions(first: 20)` (with each one's first runs) and `events(first: 100)`, in turn;
- the server's CPU time per request at that rate, for the mix and for each query alone (from /proc:
  what bounds the rate on a machine of the server's own, and far steadier than latency on a shared one);
- the ladder: rising rates of the same mix, each for `--seconds`, until the server saturates (a failed
  request, or p95 over 500 ms); the highest rate the server sustains is the highest at which every
  request succeeded and the p95 stayed under 20 ms, of all requests and of each query's.

Requests are sent open-loop on a fixed schedule and latency is counted from the time a request was due,
so a server that falls behind is charged for the queue (no coordinated omission). The client shares the
2 cores with the server: the figures are a floor. Results go to benchmarks/results/reads-<time>.json.

The load client is benchmarks/light_http.py (keep-alive HTTP/1.1 over asyncio streams), not httpx, since
the 28 November 2026 revision: httpx spent CPU per request on the cores the server needs. The queries, the
schedule and what a latency is (from the time a request was due until its full response was read; a
request counts only with status 200 and no `errors`) are the same, but figures before and after that
change are from different instruments: compare rows of one invocation. The client's own CPU per request
is reported beside the server's.

    .venv/bin/python -m benchmarks.reads --compare main [--stores embedded]

measures another revision's server against this tree's instead, both with the caches on, on the same
seeded databases and in the same invocation (the revision is checked out in a temporary git worktree and
its server runs on this tree's virtualenv), and adds the ratios (this tree / the revision) of the CPU per
request and of the sustained rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from api.auth import create_key
from benchmarks.light_http import HttpError, LightClient
from benchmarks.revisions import checkout, server_command
from persistence.database import Database
from persistence.migrations import upgrade_head
from persistence.models import AgentSession, Event, Run, utcnow
from tests.conftest import SHARED_REDIS
from tests.support.servers import (
    ApiServer,
    create_postgres_database,
    drop_postgres_database,
    postgres_available,
    redis_available,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET_P95_MS = 20.0
# Past this p95 (or any failed request) the server is saturated and the ladder stops climbing.
SATURATED_P95_MS = 500.0
DEFAULT_LADDER = "5,10,15,20,30,40,60,80,100,130,160,200,250,300"

SESSION = """
query Session($id: ID!) {
  session(id: $id) {
    id title status lastSeq totalCostUsd createdAt updatedAt
    runs(first: 20) {
      edges { cursor node { id status prompt createdAt finishedAt } }
      pageInfo { hasNextPage }
    }
    checkpoints { id runId prompt }
  }
}"""
SESSIONS = """
query Sessions {
  sessions(first: 20) {
    edges {
      cursor
      node { id title status updatedAt lastSeq runs(first: 5) { edges { node { id status } } } }
    }
    pageInfo { hasNextPage endCursor }
  }
}"""
EVENTS = """
query Events($sessionId: ID!, $afterSeq: Int) {
  events(sessionId: $sessionId, afterSeq: $afterSeq, first: 100) {
    seq sessionId runId createdAt
    payload {
      __typename
      ... on AssistantMessage { uuid model stopReason content { __typename ... on TextBlock { text }
        ... on ToolUseBlock { id name input } } }
      ... on UserMessage { uuid content { __typename ... on ToolResultBlock { toolUseId content isError } } }
      ... on SystemMessage { subtype data }
      ... on ResultMessage { subtype isError numTurns totalCostUsd result }
      ... on RunStatusChanged { runId status error }
    }
  }
}"""
QUERIES = ("session", "sessions", "events")
CACHES_OFF = {"AUTH_CACHE_SECONDS": "0", "GRAPHQL_DOCUMENT_CACHE_SIZE": "0"}


@dataclass
class Seeded:
    key: str
    session_ids: list[str]
    events_per_session: int


@dataclass
class Latencies:
    by_query: dict[str, list[float]] = field(default_factory=lambda: {q: [] for q in QUERIES})
    errors: int = 0

    def all(self) -> list[float]:
        return [value for values in self.by_query.values() for value in values]


@dataclass
class Row:
    configuration: str
    rate: float
    seconds: float
    requests: int
    errors: int
    p50_ms: dict[str, float]
    p95_ms: dict[str, float]
    p99_ms: dict[str, float]
    overall_p95_ms: float
    # The server process's CPU time (user + system) over the step, per request answered: what bounds
    # the rate on a machine of its own, and far less noisy than latency on a shared one.
    server_cpu_ms_per_request: float
    # The benchmark process's own CPU time over the step, per request: the load client's share of the cores
    # it shares with the server.
    client_cpu_ms_per_request: float = 0.0


@dataclass
class Outcome:
    configuration: str
    fixed: Row
    ladder: list[Row]
    sustained_rate: float  # the mix
    sustained_rate_by_query: dict[str, float]
    cpu_ms_per_query: dict[str, float]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _events_of(session_id: str, runs: list[str], count: int, start: datetime) -> list[dict[str, Any]]:
    """A plausible log: per run its status changes, init, assistant text and tool calls, their results."""
    rows: list[dict[str, Any]] = []
    per_run = max(6, count // len(runs))
    seq = 0
    for run_id in runs:
        payloads: list[tuple[str, dict[str, Any]]] = [
            ("run_status", {"run_id": run_id, "status": "QUEUED"}),
            ("run_status", {"run_id": run_id, "status": "RUNNING"}),
            ("system", {"subtype": "init", "data": {"model": "claude-sonnet", "tools": ["Bash", "Glob"]}}),
        ]
        for i in range(per_run - 5):
            if i % 2 == 0:
                content = [
                    {"type": "text", "text": f"Working on step {i}: " + "lorem ipsum " * 8},
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "Glob", "input": {"pattern": f"*.{i}"}},
                ]
                message = {"uuid": str(uuid.uuid4()), "model": "claude", "content": content}
                payloads.append(("assistant", message))
            else:
                result = [{"type": "tool_result", "tool_use_id": f"toolu_{i - 1}", "content": "a.py\nb.py"}]
                payloads.append(("user", {"uuid": str(uuid.uuid4()), "content": result}))
        result_message = {"subtype": "success", "num_turns": 3, "total_cost_usd": 0.01, "result": "ok"}
        payloads.append(("result", result_message))
        payloads.append(("run_status", {"run_id": run_id, "status": "COMPLETED"}))
        for kind, payload in payloads:
            seq += 1
            rows.append(
                {
                    "session_id": session_id,
                    "seq": seq,
                    "run_id": run_id,
                    "kind": kind,
                    "payload": payload,
                    "created_at": start + timedelta(milliseconds=seq),
                }
            )
    return rows[:count] if len(rows) > count else rows


def session_rows(
    tenant_id: str, api_key_id: str, title: str, at: datetime, events_per_session: int
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One seeded session's row, its two finished runs' rows and its log, for `sa.insert`."""
    session_id = str(uuid.uuid4())
    run_ids = [str(uuid.uuid4()) for _ in range(2)]
    events = _events_of(session_id, run_ids, events_per_session, at)
    session = {
        "id": session_id,
        "tenant_id": tenant_id,
        "title": title,
        "status": "IDLE",
        "created_at": at,
        "updated_at": at,
        "last_seq": len(events),
        "total_cost_usd": 0.02,
    }
    runs = []
    for r, run_id in enumerate(run_ids):
        run_at = at + timedelta(milliseconds=r)
        runs.append(
            {
                "id": run_id,
                "session_id": session_id,
                "tenant_id": tenant_id,
                "status": "COMPLETED",
                "prompt": f"prompt {r}",
                "options": {},
                "prompt_uuid": str(uuid.uuid4()),
                "created_at": run_at,
                "started_at": run_at,
                "finished_at": run_at,
                "result": {"subtype": "success", "result": "ok"},
                "interrupt_requested": False,
                "api_key_id": api_key_id,
            }
        )
    return session, runs, events


async def seed(url: str, sessions: int, events_per_session: int) -> Seeded:
    await upgrade_head(url)
    db = Database(url)
    try:
        key = await create_key(db, tenant_name="bench", name="reads")
        start = utcnow() - timedelta(days=1)
        session_ids: list[str] = []
        batch_sessions: list[dict[str, Any]] = []
        batch_runs: list[dict[str, Any]] = []
        batch_events: list[dict[str, Any]] = []

        async def flush() -> None:
            async with db.session() as s:
                if batch_sessions:
                    await s.execute(sa.insert(AgentSession), batch_sessions)
                if batch_runs:
                    await s.execute(sa.insert(Run), batch_runs)
                if batch_events:
                    await s.execute(sa.insert(Event), batch_events)
                await s.commit()
            batch_sessions.clear()
            batch_runs.clear()
            batch_events.clear()

        for n in range(sessions):
            session, runs, events = session_rows(
                key.tenant_id, key.key_id, f"session {n}", start + timedelta(seconds=n), events_per_session
            )
            session_ids.append(session["id"])
            batch_sessions.append(session)
            batch_runs.extend(runs)
            batch_events.extend(events)
            if len(batch_events) >= 5000:
                await flush()
        await flush()
        return Seeded(key=key.secret, session_ids=session_ids, events_per_session=events_per_session)
    finally:
        await db.dispose()


def _request(kind: str, seeded: Seeded, rng: random.Random) -> dict[str, Any]:
    session_id = rng.choice(seeded.session_ids)
    if kind == "session":
        return {"query": SESSION, "variables": {"id": session_id}}
    if kind == "sessions":
        return {"query": SESSIONS}
    after = rng.randrange(0, max(1, seeded.events_per_session - 100) + 1)
    return {"query": EVENTS, "variables": {"sessionId": session_id, "afterSeq": after}}


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # what orjson refuses (an integer past 64 bits) the standard library reads
        return json.loads(body)


async def load(
    http: LightClient,
    seeded: Seeded,
    rate: float,
    seconds: float,
    rng: random.Random,
    kinds: tuple[str, ...] = QUERIES,
) -> Latencies:
    """Open loop: request i is due at start + i/rate, whatever happened to the ones before."""
    latencies = Latencies()
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int, due: float) -> None:
        kind = kinds[i % len(kinds)]
        try:
            status, body = await http.post_json("/graphql", _request(kind, seeded, rng))
            ok = status == 200 and not _json(body).get("errors")
        except HttpError:
            ok = False
        if ok:
            latencies.by_query[kind].append((loop.time() - due) * 1000)
        else:
            latencies.errors += 1

    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    # A server far behind would keep the benchmark waiting: what is not back within 10 s failed.
    _, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    latencies.errors += len(pending)
    return latencies


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux)."""
    assert pid is not None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def row(
    configuration: str, rate: float, seconds: float, latencies: Latencies, cpu: float, client_cpu: float
) -> Row:
    def figures(q: float) -> dict[str, float]:
        return {kind: round(percentile(values, q), 1) for kind, values in latencies.by_query.items()}

    return Row(
        configuration=configuration,
        rate=rate,
        seconds=seconds,
        requests=len(latencies.all()) + latencies.errors,
        errors=latencies.errors,
        p50_ms=figures(0.50),
        p95_ms=figures(0.95),
        p99_ms=figures(0.99),
        overall_p95_ms=round(percentile(latencies.all(), 0.95), 1),
        server_cpu_ms_per_request=round(cpu * 1000 / max(1, len(latencies.all())), 2),
        client_cpu_ms_per_request=round(client_cpu * 1000 / max(1, len(latencies.all())), 2),
    )


@asynccontextmanager
async def server(work: Path, env: dict[str, str], source: Path | None = None) -> AsyncIterator[ApiServer]:
    """The server of this tree, or of the checkout at `source` (on this tree's virtualenv)."""
    base = {
        "EXECUTE_RUNS": "false",
        "LOG_LEVEL": "WARNING",
        "LOG_FORMAT": "json",
        "RATE_LIMIT_REQUESTS_PER_SECOND": "0",
    }
    command = server_command(source) if source is not None else None
    api = ApiServer(work, env={**base, **env}, command=command)
    await api.start(timeout=60)
    try:
        yield api
    finally:
        await api.stop()


async def step(
    configuration: str,
    api: ApiServer,
    http: LightClient,
    seeded: Seeded,
    rate: float,
    seconds: float,
    rng: random.Random,
    kinds: tuple[str, ...] = QUERIES,
) -> Row:
    before, client_before = cpu_seconds(api.pid), time.process_time()
    latencies = await load(http, seeded, rate, seconds, rng, kinds)
    client = time.process_time() - client_before
    return row(configuration, rate, seconds, latencies, cpu_seconds(api.pid) - before, client)


async def measure(
    configuration: str, api: ApiServer, seeded: Seeded, rate: float, seconds: float, ladder: list[float]
) -> Outcome:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {seeded.key}"}
    async with LightClient(api.base_url, headers, max_connections=100) as http:
        await load(http, seeded, rate=20, seconds=2, rng=rng)  # warm: connections, pools, caches
        fixed = await step(configuration, api, http, seeded, rate, seconds, rng)
        print(
            f"  {configuration}: {rate:g}/s p95 {fixed.overall_p95_ms} ms, "
            f"server CPU {fixed.server_cpu_ms_per_request} ms/request, "
            f"client CPU {fixed.client_cpu_ms_per_request} ms/request",
            flush=True,
        )
        alone = {}
        for kind in QUERIES:
            only = await step(configuration, api, http, seeded, rate, seconds / 2, rng, (kind,))
            alone[kind] = only.server_cpu_ms_per_request
        climbed: list[Row] = []
        # A noisy step under the target does not end the climb; saturation does.
        sustained = 0.0
        by_query = dict.fromkeys(QUERIES, 0.0)
        for rate_step in ladder:
            result = await step(configuration, api, http, seeded, rate_step, seconds, rng)
            climbed.append(result)
            print(
                f"  {configuration}: {rate_step:g}/s p95 {result.overall_p95_ms} ms errors {result.errors}",
                flush=True,
            )
            if result.errors:
                break
            if result.overall_p95_ms < TARGET_P95_MS:
                sustained = rate_step
            for kind in QUERIES:
                if result.p95_ms[kind] < TARGET_P95_MS:
                    by_query[kind] = rate_step
            if result.overall_p95_ms > SATURATED_P95_MS:
                break
            await asyncio.sleep(1)  # let the previous step's stragglers drain
    return Outcome(
        configuration=configuration,
        fixed=fixed,
        ladder=climbed,
        sustained_rate=sustained,
        sustained_rate_by_query=by_query,
        cpu_ms_per_query=alone,
    )


async def compare(args: argparse.Namespace) -> list[Outcome]:
    """The revision `args.compare` and this tree, caches on, each store seeded once for both."""
    ladder = [float(value) for value in args.ladder.split(",")]
    stores = args.stores.split(",")
    work = Path(tempfile.mkdtemp(prefix="caga-reads-"))
    outcomes: list[Outcome] = []
    async with checkout(args.compare) as baseline:
        sides = ((args.compare, baseline), ("this tree", None))
        if "embedded" in stores:
            data_dir = work / "embedded"
            url = f"sqlite+aiosqlite:///{data_dir / 'claude-agent-api.sqlite3'}"
            seeded = await seed(url, args.sessions, args.events_per_session)
            for label, source in sides:
                async with server(work / "embedded-api", {"DATA_DIR": str(data_dir)}, source) as api:
                    name = f"embedded, {label}"
                    outcomes.append(await measure(name, api, seeded, args.rate, args.seconds, ladder))
        if "postgres" in stores and postgres_available() and redis_available():
            pg_url = await create_postgres_database("caga_reads")
            try:
                seeded = await seed(pg_url, args.sessions, args.events_per_session)
                env = {"DATABASE_URL": pg_url, "REDIS_URL": SHARED_REDIS, "DATA_DIR": str(work / "pg-data")}
                for label, source in sides:
                    async with server(work / "pg-api", env, source) as api:
                        name = f"pg+redis, {label}"
                        outcomes.append(await measure(name, api, seeded, args.rate, args.seconds, ladder))
            finally:
                await drop_postgres_database(pg_url)
    return outcomes


def ratios(outcomes: list[Outcome]) -> str:
    """This tree / the baseline, per store: CPU per request (lower is better) and sustained rate."""
    lines = [
        "Ratios, this tree / the baseline (CPU: lower is better; rate: higher is better):",
        f"{'store':10} {'cpu mix':>8} " + " ".join(f"{'cpu ' + q:>12}" for q in QUERIES) + "  sustained",
    ]
    for before, after in zip(outcomes[::2], outcomes[1::2], strict=True):
        store = after.configuration.split(",")[0]

        def ratio(new: float, old: float) -> str:
            return f"{new / old:.2f}" if old else "n/a"

        cpu = " ".join(f"{ratio(after.cpu_ms_per_query[q], before.cpu_ms_per_query[q]):>12}" for q in QUERIES)
        mix = ratio(after.fixed.server_cpu_ms_per_request, before.fixed.server_cpu_ms_per_request)
        rate = ratio(after.sustained_rate, before.sustained_rate)
        lines.append(f"{store:10} {mix:>8} {cpu}  {rate:>9}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> list[Outcome]:
    ladder = [float(value) for value in args.ladder.split(",")]
    work = Path(tempfile.mkdtemp(prefix="caga-reads-"))
    outcomes: list[Outcome] = []

    data_dir = work / "embedded"
    url = f"sqlite+aiosqlite:///{data_dir / 'claude-agent-api.sqlite3'}"
    started = time.monotonic()
    seeded = await seed(url, args.sessions, args.events_per_session)
    print(f"embedded: seeded in {time.monotonic() - started:.0f} s", flush=True)
    for caches, env in (("caches on", {}), ("caches off", CACHES_OFF)):
        async with server(work / "embedded-api", {"DATA_DIR": str(data_dir), **env}) as api:
            outcomes.append(
                await measure(f"embedded, {caches}", api, seeded, args.rate, args.seconds, ladder)
            )

    if postgres_available() and redis_available():
        pg_url = await create_postgres_database("caga_reads")
        try:
            started = time.monotonic()
            seeded = await seed(pg_url, args.sessions, args.events_per_session)
            print(f"postgres: seeded in {time.monotonic() - started:.0f} s", flush=True)
            env = {"DATABASE_URL": pg_url, "REDIS_URL": SHARED_REDIS, "DATA_DIR": str(work / "pg-data")}
            for caches, extra in (("caches on", {}), ("caches off", CACHES_OFF)):
                async with server(work / "pg-api", {**env, **extra}) as api:
                    outcomes.append(
                        await measure(f"pg+redis, {caches}", api, seeded, args.rate, args.seconds, ladder)
                    )
        finally:
            await drop_postgres_database(pg_url)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    lines = []
    header = f"{'configuration':24} {'query':9} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    cpu_header = (
        f"{'configuration':24} {'mix':>6} " + " ".join(f"{q:>9}" for q in QUERIES) + "  req/s/core  client"
    )
    rate = outcomes[0].fixed.rate if outcomes else 0
    lines += [f"At {rate:g} requests/s (the three queries in turn):", header, "-" * len(header)]
    for outcome in outcomes:
        fixed = outcome.fixed
        for query in QUERIES:
            lines.append(
                f"{outcome.configuration:24} {query:9} {fixed.p50_ms[query]:>7.1f} "
                f"{fixed.p95_ms[query]:>7.1f} {fixed.p99_ms[query]:>7.1f}"
            )
    lines += [
        "",
        f"Server CPU ms per request at {rate:g} requests/s (each query alone too), the rate one core",
        "would sustain at the mix's cost, and the load client's own CPU ms per request of the mix:",
        cpu_header,
        "-" * len(cpu_header),
    ]
    for outcome in outcomes:
        mix = outcome.fixed.server_cpu_ms_per_request
        alone = " ".join(f"{outcome.cpu_ms_per_query[q]:>9.2f}" for q in QUERIES)
        client = outcome.fixed.client_cpu_ms_per_request
        per_core = 1000 / mix if mix else 0
        lines.append(f"{outcome.configuration:24} {mix:>6.2f} {alone}  {per_core:>10.0f}  {client:>6.2f}")
    lines += [
        "",
        f"Highest rate of the mix (requests/s) with every request answered and p95 < {TARGET_P95_MS:g} ms, "
        "of all requests and of each query's:",
        f"{'configuration':24} {'all':>5} " + " ".join(f"{q:>9}" for q in QUERIES) + "  ladder: rate:p95",
    ]
    for outcome in outcomes:
        steps = ", ".join(f"{r.rate:g}:{r.overall_p95_ms:g}" for r in outcome.ladder)
        each = " ".join(f"{outcome.sustained_rate_by_query[q]:>9g}" for q in QUERIES)
        lines.append(f"{outcome.configuration:24} {outcome.sustained_rate:>5g} {each}  {steps}")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--events-per-session", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20, help="the fixed rate of the latency table")
    parser.add_argument("--seconds", type=float, default=6, help="how long each rate is held")
    parser.add_argument("--ladder", default=DEFAULT_LADDER, help="rates tried in turn, comma-separated")
    parser.add_argument(
        "--compare", metavar="REF", help="measure this git revision's server against this tree's"
    )
    parser.add_argument(
        "--stores", default="embedded,postgres", help="with --compare: embedded, postgres or both"
    )
    arguments = parser.parse_args()
    results = asyncio.run(compare(arguments) if arguments.compare else main(arguments))
    print()
    print(report(results))
    if arguments.compare:
        print()
        print(ratios(results))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"reads-{datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([asdict(outcome) for outcome in results], indent=2))
    print(f"\nwritten to {out}")
