"""A burst of new sessions: N sessions started at once on one machine.

    .venv/bin/python -m benchmarks.burst [--sessions 100]

Starts the real server (the embedded default; and two replicas on PostgreSQL + Redis when they run here),
sends `--sessions` startRun calls at once (one tenant, rate limits off, each a new session), and reports:
whether every run finished COMPLETED, the time until all finished, the most runs seen QUEUED at once
(sampled every 0.5 s), and the peak memory of the servers' process trees (servers, sandboxes and CLIs,
summed RSS, sampled every 0.25 s) beside the agent memory budget the replicas report on /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.sandbox import _descendants, _memory_kb
from tests.documents import start_run
from tests.support.cluster import Cluster, cluster
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import postgres_available, redis_available

RESULTS = Path(__file__).resolve().parent / "results"
PROMPT = "[scenario:echo] burst"
STATUSES = """
query Statuses($after: String) {
  sessions(first: 100, after: $after) {
    edges { node { id status runs(first: 1) { edges { node { id status error } } } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
BUDGET_METRIC = "agent_memory_budget_bytes"


@dataclass
class Burst:
    configuration: str
    sessions: int
    started: int
    refused: int
    completed: int
    failed: int
    seconds_until_all_finished: float
    max_queued: int
    peak_memory_mb: float
    budget_mb: float | None
    # (seconds since the burst, MB) every 0.25 s: the plot's memory curve.
    memory_timeline: list[tuple[float, float]]


def tree_rss_mb(c: Cluster) -> float:
    total = 0
    for replica in c.replicas:
        if replica.pid is None:
            continue
        total += sum(_memory_kb(pid)[0] for pid, _ in _descendants(replica.pid))
    return total / 1024


async def measure(name: str, c: Cluster, sessions: int, timeout: float) -> Burst:
    budget = sum([await c.metric(r, BUDGET_METRIC) for r in c.replicas]) / 2**20 or None
    timeline: list[tuple[float, float]] = []
    stop = asyncio.Event()
    origin = time.perf_counter()

    async def sample_memory() -> None:
        while not stop.is_set():
            timeline.append((round(time.perf_counter() - origin, 2), round(tree_rss_mb(c))))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample_memory())
    clients = [
        GraphQLHttpClient(c.replicas[i % len(c.replicas)].base_url, c.key, timeout=120)
        for i in range(sessions)
    ]
    started = time.perf_counter()
    try:
        results = await asyncio.gather(
            *(start_run(client, prompt=PROMPT) for client in clients), return_exceptions=True
        )
        ok = [r for r in results if isinstance(r, dict) and r.get("__typename") == "StartRunSuccess"]
        refused = len(results) - len(ok)
        for r in results:
            if not (isinstance(r, dict) and r.get("__typename") == "StartRunSuccess"):
                print(f"  refused: {r!r}"[:300], flush=True)
        wanted = {r["run"]["id"] for r in ok}
        max_queued = 0
        finals: dict[str, dict[str, Any]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with GraphQLHttpClient(c.replicas[0].base_url, c.key) as poller:
            while loop.time() < deadline:
                runs: list[dict[str, Any]] = []
                after = None
                while True:
                    page = (await poller.execute(STATUSES, {"after": after}))["sessions"]
                    runs += [
                        edge["node"] for session in page["edges"] for edge in session["node"]["runs"]["edges"]
                    ]
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]
                mine = [run for run in runs if run["id"] in wanted]
                max_queued = max(max_queued, sum(run["status"] == "QUEUED" for run in mine))
                finals = {
                    run["id"]: run for run in mine if run["status"] in {"COMPLETED", "FAILED", "INTERRUPTED"}
                }
                if len(finals) == len(wanted):
                    break
                await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await sampler
        for client in clients:
            await client.aclose()
    failed = [run for run in finals.values() if run["status"] != "COMPLETED"]
    for run in failed[:5]:
        print(f"  failed: {run}", flush=True)
    return Burst(
        configuration=name,
        sessions=sessions,
        started=len(wanted),
        refused=refused,
        completed=len(finals) - len(failed),
        failed=len(failed) + (len(wanted) - len(finals)),
        seconds_until_all_finished=round(elapsed, 1),
        max_queued=max_queued,
        peak_memory_mb=max((mb for _, mb in timeline), default=0.0),
        budget_mb=round(budget) if budget else None,
        memory_timeline=timeline,
    )


async def main(sessions: int, timeout: float) -> list[Burst]:
    work = Path(tempfile.mkdtemp(prefix="caga-burst-"))
    env = {
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_REQUESTS_PER_SECOND": "0",
        "RATE_LIMIT_RUNS_PER_MINUTE_PER_KEY": "0",
        "RATE_LIMIT_RUNS_PER_MINUTE_PER_TENANT": "0",
        "MAX_ACTIVE_RUNS_PER_TENANT": "0",
        # The default (50) refuses the rest of a 100-session burst from one tenant: the bound is the point
        # of the setting, the benchmark measures what the budget does with all of them.
        "MAX_QUEUED_RUNS_PER_TENANT": "1000",
    }
    results = []
    async with cluster(work / "embedded", embedded=True, env=env) as c:
        results.append(await measure("embedded, 1 replica", c, sessions, timeout))
        print(report(results[-1:]), flush=True)
    if postgres_available() and redis_available():
        async with cluster(work / "pg", replicas=2, env=env) as c:
            results.append(await measure("pg+redis, 2 replicas", c, sessions, timeout))
            print(report(results[-1:]), flush=True)
    return results


def report(bursts: list[Burst]) -> str:
    header = (
        f"{'configuration':22} {'sessions':>8} {'refused':>7} {'completed':>9} {'failed':>6} "
        f"{'all done s':>10} {'max queued':>10} {'peak MB':>8} {'budget MB':>9}"
    )
    lines = [header, "-" * len(header)]
    for b in bursts:
        lines.append(
            f"{b.configuration:22} {b.sessions:>8} {b.refused:>7} {b.completed:>9} {b.failed:>6} "
            f"{b.seconds_until_all_finished:>10.1f} {b.max_queued:>10} {b.peak_memory_mb:>8.0f} "
            f"{b.budget_mb if b.budget_mb is not None else '-':>9}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for all runs to finish")
    args = parser.parse_args()
    figures = asyncio.run(main(args.sessions, args.timeout))
    print(report(figures))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"burst-{datetime.now():%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps([asdict(b) for b in figures], indent=2))
    print(f"\nwritten to {out}")
