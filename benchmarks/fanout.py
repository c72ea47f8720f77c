"""Fan-out benchmark: one run's events to many watchers, on one replica and across two.

    .venv/bin/python -m benchmarks.fanout [--watchers 100] [--events 2000] [--rounds 2]

Starts real API processes (the embedded default; and PostgreSQL + Redis with two replicas), subscribes the
watchers to a session over graphql-transport-ws, starts a run of the scripted model that emits `--events`
messages, and measures, per configuration and in the same invocation (this machine is shared and noisy:
compare ratios, not absolutes):

- events/s delivered: all deliveries to all watchers over the time from the first to the last delivery;
- delay from commit to delivery: receive time minus the event's createdAt (stamped just before its
  transaction commits; same host clock), p50/p99/max over every delivery. A run of the scripted model
  emits its messages in a burst far faster than one replica can fan them out to 100 watchers, so the
  delay under this workload is mostly the backlog: it measures how long the burst takes to drain.

- CPU: the replicas' server processes' CPU time over the watched run, per delivery (steadier than the
  rates on a shared machine), and the benchmark client's own CPU seconds (it must not be what bounds the
  rate: it only timestamps frames while the run lasts).

The benchmark client and the servers share the machine's cores, as a dashboard host would not: the figures
are a floor. Results are printed and written to benchmarks/results/fanout-<timestamp>.json.

    .venv/bin/python -m benchmarks.fanout --compare main [--rounds 1] [--stores embedded,postgres]

measures another revision's servers against this tree's instead, alternately in the same invocation (the
revision is checked out in a temporary git worktree and runs on this tree's virtualenv), and adds the
ratios this tree / the revision.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from benchmarks.revisions import checkout, server_command
from tests.documents import start_ok, wait_for_run
from tests.support.cluster import Cluster, cluster, paced_scenario
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import postgres_available, redis_available

WATCH = """
subscription Watch($sessionId: ID!, $afterSeq: Int) {
  sessionEvents(sessionId: $sessionId, afterSeq: $afterSeq) { seq createdAt }
}"""
LAST_SEQ = "query($id: ID!) { session(id: $id) { lastSeq } }"
RESULTS = Path(__file__).resolve().parent / "results"
# Browsers offer permessage-deflate and uvicorn accepts it; --no-deflate measures without it.
DEFLATE = True


@dataclass
class Figures:
    configuration: str
    workload: str
    watchers: int
    events: int
    deliveries: int
    seconds: float
    deliveries_per_second: float
    delay_p50_ms: float
    delay_p99_ms: float
    delay_max_ms: float
    complete: bool
    # CPU seconds over the watched run (steadier than rates on a shared machine): the replicas' server
    # processes (their own CPU, not the agent CLIs'), and this benchmark client's.
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    # The run's own span (first to last commit), and how long after its last commit the last watcher had
    # everything: the lag beyond the burst itself.
    commit_span_s: float = 0.0
    tail_ms: float = 0.0

    @property
    def server_cpu_us_per_delivery(self) -> float:
        return 1e6 * self.server_cpu_s / self.deliveries if self.deliveries else 0.0


def _process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _watch(
    ws_url: str,
    key: str,
    session_id: str,
    after: int,
    expected: int,
    ready: asyncio.Event,
    frames: list[tuple[float, str]],
) -> None:
    """A deliberately cheap client: it only timestamps raw frames; parsing happens after the run, so
    the client costs the shared cores as little as possible while the servers are measured."""
    async with connect(
        ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        max_size=None,
        proxy=None,
        compression="deflate" if DEFLATE else None,
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        variables = {"sessionId": session_id, "afterSeq": after}
        await ws.send(
            json.dumps({"id": "w", "type": "subscribe", "payload": {"query": WATCH, "variables": variables}})
        )
        ready.set()
        # One deadline for the whole stream: a wait_for per frame costs the client a task per frame.
        async with asyncio.timeout(600):
            async for frame in ws:
                frames.append((time.time(), str(frame)))
                if len(frames) >= expected:
                    break


def _parse(frames: list[tuple[float, str]]) -> tuple[list[int], list[tuple[float, float]]]:
    seqs, arrivals = [], []
    for received, frame in frames:
        event = json.loads(frame)["payload"]["data"]["sessionEvents"]
        seqs.append(event["seq"])
        arrivals.append((received, datetime.fromisoformat(event["createdAt"]).timestamp()))
    return seqs, arrivals


def workload_prompt(workload: str, events: int) -> str:
    """burst: the scripted model emits `events` messages at once (the fan-out's backlog drains);
    paced: three events every 50 ms (about 60 events/s per session, a busy agent's pace)."""
    if workload == "burst":
        return f"[scenario:many:{events}]"
    return paced_scenario(steps=max(1, events // 3), delay_ms=50)


async def measure(
    name: str,
    c: Cluster,
    *,
    watchers: int,
    events: int,
    workload: str = "burst",
    target: int = 0,
    split: bool = False,
) -> Figures:
    entry = c.replicas[0]
    async with GraphQLHttpClient(entry.base_url, c.key) as client:
        first = await start_ok(client, prompt="warm up")
        session_id = first["session"]["id"]
        await wait_for_run(client, first["run"]["id"])
        after = (await client.execute(LAST_SEQ, {"id": session_id}))["session"]["lastSeq"]
        # The run's own events: its messages plus init/status/result and RUNNING/COMPLETED/QUEUED.
        probe = await start_ok(client, prompt=workload_prompt(workload, events), sessionId=session_id)
        await wait_for_run(client, probe["run"]["id"], timeout=300)
        per_run = (await client.execute(LAST_SEQ, {"id": session_id}))["session"]["lastSeq"] - after
        after += per_run

        targets = [c.replicas[i % 2] if split else c.replicas[target] for i in range(watchers)]
        readies = [asyncio.Event() for _ in range(watchers)]
        frames: list[list[tuple[float, str]]] = [[] for _ in range(watchers)]
        tasks = [
            asyncio.create_task(_watch(t.ws_url, c.key, session_id, after, per_run, r, f))
            for t, r, f in zip(targets, readies, frames, strict=True)
        ]
        await asyncio.gather(*(r.wait() for r in readies))
        await asyncio.sleep(0.5)  # let every subscription finish its (empty) replay and go live
        # The client's own full collections (its heap grows by a tuple per frame) stalled every socket at
        # once by 100-200 ms, which showed as the servers' paced p99: no collector while it measures.
        gc.collect()
        gc.disable()
        try:
            server_before = sum(_process_cpu(replica.pid) for replica in c.replicas)
            client_before = _own_cpu()
            run = await start_ok(client, prompt=workload_prompt(workload, events), sessionId=session_id)
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=600)
            server_cpu = sum(_process_cpu(replica.pid) for replica in c.replicas) - server_before
            client_cpu = _own_cpu() - client_before
        finally:
            gc.enable()
        await wait_for_run(client, run["run"]["id"])

    parsed = [_parse(per_watcher) for per_watcher in frames]
    seqs = [p[0] for p in parsed]
    arrivals = [p[1] for p in parsed]
    flat = [item for per_watcher in arrivals for item in per_watcher]
    delays = [(received - created) * 1000 for received, created in flat]
    span = max(r for r, _ in flat) - min(r for r, _ in flat)
    commits = [created for _, created in flat]
    expected = list(range(after + 1, after + per_run + 1))
    return Figures(
        configuration=name,
        workload=workload,
        watchers=watchers,
        events=per_run,
        deliveries=len(flat),
        seconds=round(span, 3),
        deliveries_per_second=round(len(flat) / span, 1) if span else float("inf"),
        delay_p50_ms=round(statistics.median(delays), 1),
        delay_p99_ms=round(_percentile(delays, 0.99), 1),
        delay_max_ms=round(max(delays), 1),
        complete=all(s == expected for s in seqs),
        server_cpu_s=round(server_cpu, 2),
        client_cpu_s=round(client_cpu, 2),
        commit_span_s=round(max(commits) - min(commits), 3),
        tail_ms=round(1000 * (max(r for r, _ in flat) - max(commits)), 1),
    )


async def main(watchers: int, events: int, paced_events: int, rounds: int) -> list[Figures]:
    results: list[Figures] = []
    work = Path(tempfile.mkdtemp(prefix="caga-bench-"))
    have_services = postgres_available() and redis_available()
    workloads = [("burst", events), ("paced", paced_events)]
    for round_no in range(rounds):
        async with cluster(work / f"embedded-{round_no}", embedded=True) as c:
            for workload, count in workloads:
                results.append(
                    await measure(
                        "embedded: run + watchers, 1 process",
                        c,
                        watchers=watchers,
                        events=count,
                        workload=workload,
                    )
                )
        if not have_services:
            continue
        # Replica 0 runs the agent; replica 1 executes nothing and only serves watchers.
        per_replica = [{}, {"EXECUTE_RUNS": "false"}]
        async with cluster(work / f"pg-{round_no}", replicas=2, per_replica=per_replica) as c:
            for workload, count in workloads:
                for name, target, split in (
                    ("pg+redis: run + watchers on replica A", 0, False),
                    ("pg+redis: run on A, watchers on B", 1, False),
                    ("pg+redis: run on A, watchers split A/B", 0, True),
                ):
                    results.append(
                        await measure(
                            name,
                            c,
                            watchers=watchers,
                            events=count,
                            workload=workload,
                            target=target,
                            split=split,
                        )
                    )
    return results


def report(results: list[Figures]) -> str:
    header = (
        f"{'configuration':44} {'load':>6} {'watchers':>8} {'events':>7} {'deliv/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'srv us/dlv':>10} {'client s':>8} "
        f"{'run s':>6} {'tail ms':>8} ok"
    )
    lines = [header, "-" * len(header)]
    for f in results:
        lines.append(
            f"{f.configuration:44} {f.workload:>6} {f.watchers:>8} {f.events:>7} "
            f"{f.deliveries_per_second:>9.0f} "
            f"{f.delay_p50_ms:>8.1f} {f.delay_p99_ms:>8.1f} {f.delay_max_ms:>8.1f} "
            f"{f.server_cpu_us_per_delivery:>10.1f} {f.client_cpu_s:>8.2f} "
            f"{f.commit_span_s:>6.2f} {f.tail_ms:>8.1f} "
            f"{'yes' if f.complete else 'NO'}"
        )
    return "\n".join(lines)


async def compare(
    ref: str, *, watchers: int, events: int, paced_events: int, rounds: int, stores: list[str]
) -> list[Figures]:
    """The revision `ref` and this tree, alternately, on the same workloads: per round and store, `ref`'s
    replicas first, then this tree's. Configuration names end with ", <ref>" or ", this tree"."""
    results: list[Figures] = []
    work = Path(tempfile.mkdtemp(prefix="caga-fanout-compare-"))
    workloads = [("burst", events), ("paced", paced_events)]
    quiet = {"LOG_LEVEL": "WARNING"}
    with_services = "postgres" in stores and postgres_available() and redis_available()
    async with checkout(ref) as tree:
        sides = ((ref, server_command(tree)), ("this tree", None))
        for round_no in range(rounds):
            for store in stores:
                for label, command in sides:
                    side = "base" if command else "this"
                    if store == "embedded":
                        async with cluster(
                            work / f"{side}-embedded-{round_no}", embedded=True, env=quiet, command=command
                        ) as c:
                            for workload, count in workloads:
                                figures = await measure(
                                    f"embedded, {label}",
                                    c,
                                    watchers=watchers,
                                    events=count,
                                    workload=workload,
                                )
                                print(report([figures]).splitlines()[-1], flush=True)
                                results.append(figures)
                    elif store == "postgres" and with_services:
                        per_replica = [{}, {"EXECUTE_RUNS": "false"}]
                        async with cluster(
                            work / f"{side}-pg-{round_no}",
                            replicas=2,
                            per_replica=per_replica,
                            env=quiet,
                            command=command,
                        ) as c:
                            for workload, count in workloads:
                                for name, target in (("pg+redis, on A", 0), ("pg+redis, run A, on B", 1)):
                                    figures = await measure(
                                        f"{name}, {label}",
                                        c,
                                        watchers=watchers,
                                        events=count,
                                        workload=workload,
                                        target=target,
                                    )
                                    print(report([figures]).splitlines()[-1], flush=True)
                                    results.append(figures)
    return results


def ratios(results: list[Figures], ref: str) -> str:
    """This tree / `ref` per configuration and workload, over the medians of the rounds: deliveries/s
    (higher is better), p99 delay and server CPU per delivery (lower is better)."""
    groups: dict[tuple[str, str, str], list[Figures]] = {}
    for f in results:
        name, _, label = f.configuration.rpartition(", ")
        groups.setdefault((name, f.workload, "this" if label == "this tree" else "base"), []).append(f)

    Key = tuple[str, str, str]

    def median(key: Key, attribute: str) -> float:
        return float(statistics.median(getattr(f, attribute) for f in groups[key]))

    lines = [
        f"Ratios, this tree / {ref} (deliveries/s: higher is better; p99 and CPU per delivery: lower is):",
        f"{'configuration':28} {'load':>6} {'deliv/s':>8} {'p50':>6} {'p99':>6} {'tail':>6} "
        f"{'srv cpu/dlv':>11} {'this p99 ms':>11} {'this tail ms':>12} {'this deliv/s':>12}",
    ]
    for name, workload, side in groups:
        if side != "this" or (name, workload, "base") not in groups:
            continue
        this, base = (name, workload, "this"), (name, workload, "base")

        def ratio(attribute: str, this: Key = this, base: Key = base) -> str:
            old = median(base, attribute)
            return f"{median(this, attribute) / old:.2f}" if old else "n/a"

        lines.append(
            f"{name:28} {workload:>6} {ratio('deliveries_per_second'):>8} {ratio('delay_p50_ms'):>6} "
            f"{ratio('delay_p99_ms'):>6} {ratio('tail_ms'):>6} {ratio('server_cpu_us_per_delivery'):>11} "
            f"{median(this, 'delay_p99_ms'):>11.1f} {median(this, 'tail_ms'):>12.1f} "
            f"{median(this, 'deliveries_per_second'):>12.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000, help="messages of the burst run")
    parser.add_argument("--paced-events", type=int, default=300, help="events of the paced run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-deflate", action="store_true", help="watchers refuse permessage-deflate")
    parser.add_argument(
        "--compare", metavar="REF", help="measure this git revision's servers against this tree's"
    )
    parser.add_argument(
        "--stores", default="embedded,postgres", help="with --compare: embedded, postgres or both"
    )
    args = parser.parse_args()
    DEFLATE = not args.no_deflate
    if args.compare:
        figures = asyncio.run(
            compare(
                args.compare,
                watchers=args.watchers,
                events=args.events,
                paced_events=args.paced_events,
                rounds=args.rounds,
                stores=args.stores.split(","),
            )
        )
    else:
        figures = asyncio.run(main(args.watchers, args.events, args.paced_events, args.rounds))
    print(report(figures))
    if args.compare:
        print()
        print(ratios(figures, args.compare))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"fanout-{datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps([asdict(f) for f in figures], indent=2))
    print(f"\nwritten to {out}")
