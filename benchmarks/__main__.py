"""Every benchmark of the service in one invocation, side by side; writes docs/benchmarks.md and its plot.

    .venv/bin/python -m benchmarks [--quick] [--only first-answer,fanout,reads,burst]

Not part of the test run: it takes about 30 minutes (`--quick`: about 10) and wants PostgreSQL and Redis
on 127.0.0.1 for the replicated rows (the embedded rows run without them). The parts, each a module of its
own that can also run alone with more knobs (`python -m benchmarks.<part> --help`):

- first answer through the API against the bare SDK set up alike: cold, follow-up, from the warm pool
  (benchmarks/first_answer.py);
- fan-out: deliveries/s and commit-to-delivery p50/p99 for 1, 10 and 100 watchers, on one replica and
  across two, in a burst and at a paced 60 events/s (benchmarks/fanout.py);
- reads: p50/p95/p99 of the main queries at a fixed rate over 1,000 sessions and 100,000 events, and the
  highest rate served with p95 < 20 ms (benchmarks/reads.py);
- a burst of 100 new sessions at once: all finish? peak memory against the budget, queueing, time until
  all are done (benchmarks/burst.py).

The machine this runs on is usually shared: absolute figures move from run to run, the ratios of one run
much less. Raw results go to benchmarks/results/all-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import burst, fanout, first_answer, reads
from tests.support.cluster import cluster
from tests.support.servers import postgres_available, redis_available

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks.png"
PARTS = ("first-answer", "fanout", "reads", "burst")


async def run_fanout(watcher_counts: list[int], events: int, paced_events: int) -> list[fanout.Figures]:
    results: list[fanout.Figures] = []
    work = Path(tempfile.mkdtemp(prefix="caga-bench-fanout-"))
    workloads = [("burst", events), ("paced", paced_events)]
    async with cluster(work / "embedded", embedded=True, env={"LOG_LEVEL": "WARNING"}) as c:
        for workload, count in workloads:
            for watchers in watcher_counts:
                figures = await fanout.measure(
                    "one replica (embedded)", c, watchers=watchers, events=count, workload=workload
                )
                print(fanout.report([figures]).splitlines()[-1], flush=True)
                results.append(figures)
    if not (postgres_available() and redis_available()):
        return results
    per_replica = [{}, {"EXECUTE_RUNS": "false"}]
    async with cluster(work / "pg", replicas=2, per_replica=per_replica, env={"LOG_LEVEL": "WARNING"}) as c:
        for workload, count in workloads:
            for watchers in watcher_counts:
                for name, target in (
                    ("one replica (pg+redis)", 0),
                    ("across two: run on A, watchers on B", 1),
                ):
                    figures = await fanout.measure(
                        name, c, watchers=watchers, events=count, workload=workload, target=target
                    )
                    print(fanout.report([figures]).splitlines()[-1], flush=True)
                    results.append(figures)
    return results


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any], args: argparse.Namespace) -> str:
    out = [
        "# Benchmarks",
        "",
        "Written by `.venv/bin/python -m benchmarks"
        + (" --quick" if args.quick else "")
        + f"` on {results['when']} ({results['machine']}). Not part of the test run. The machine is "
        "shared and noisy, so read the ratios of one run, not the absolute figures; the benchmark client "
        "shares the cores with the servers, so every figure is a floor. Each section states the capacity "
        "issue's targets for its table.",
        "",
        "![Benchmarks plot](benchmarks.png)",
        "",
    ]
    if "first_answer" in results:
        rows = [
            [
                s["configuration"],
                s["samples"],
                f"{s['cold_median_s']:.3f}",
                f"{s['cold_ratio']:.2f}x",
                f"{s['follow_up_median_s']:.3f}",
                f"{s['follow_up_ratio']:.2f}x",
                f"{s['follow_up_resubscribe_median_s']:.3f}",
                f"{s['follow_up_resubscribe_ratio']:.2f}x",
            ]
            for s in results["first_answer"]
        ]
        out += [
            "## Time to first answer",
            "",
            "From `startRun` (the WebSocket already open) to the first AssistantMessage, against the bare "
            "SDK set up alike (new client, fresh config and working directories, no setting sources, "
            "unconfined); both call the same scripted model, in the benchmark's process, as a remote model "
            "API would be. Two follow-up columns, both over the bare SDK's follow-up (the next query on its "
            'open stream): "follow-up, kept-open subscription", the answer arriving on the `sessionEvents` '
            "subscription the cold turn opened, as a chat frontend keeps it (the follow-up target's "
            'figure); and "follow-up, new subscription with afterSeq", a client that opens a new '
            "subscription after each `startRun`, resuming after the last seq it saw. "
            "Medians of interleaved rounds, each sample and each follow-up, on every side alike, taken "
            "once the machine is quiet (at most 3 s after the turn before), as a person reads an answer "
            "before the next prompt: a bare SDK follow-up sent the moment its turn ended ran 29-30 ms "
            "where one after a 0.1 s pause ran 44-53 ms (2026-11-28), a head start the API's follow-up, "
            "which waits for its run to be reported finished, never had. "
            "Targets: cold ≤ 1.05x, follow-up (kept open) ≤ 1.1x, from the "
            "warm pool "
            "≤ 0.3x of the bare SDK's cold start. The API's CLIs run in the bubblewrap sandbox "
            "(docs/security.md): the sandbox alone costs about 1.03x on a cold start "
            "(benchmarks/sandbox.py).",
            "",
            _table(
                [
                    "configuration",
                    "rounds",
                    "cold s",
                    "cold x bare",
                    "follow-up, kept-open subscription s",
                    "x bare",
                    "follow-up, new subscription with afterSeq s",
                    "x bare",
                ],
                rows,
            ),
            "",
        ]
    if "fanout" in results:
        rows = [
            [
                f["configuration"],
                f["workload"],
                f["watchers"],
                f["events"],
                f"{f['deliveries_per_second']:.0f}",
                f"{f['delay_p50_ms']:.0f}",
                f"{f['delay_p99_ms']:.0f}",
                f"{f['commit_span_s']:.2f}",
                f"{f['commit_span_s'] + f['tail_ms'] / 1000:.2f}",
                "yes" if f["complete"] else "NO",
            ]
            for f in results["fanout"]
        ]
        out += [
            "## Fan-out",
            "",
            "One session's run streamed to N watchers over graphql-transport-ws (permessage-deflate on, as "
            "browsers ask). burst: the scripted model emits its messages at once, so delay is mostly the "
            "backlog draining; paced: three events every 50 ms (about 60/s). Deliveries/s counts every "
            "delivery to every watcher. `complete` checks every watcher got exactly seq 1..n. Targets: "
            "≥ 20,000 deliveries/s per replica to 100 watchers, across two within 80 % of it, paced p99 "
            "< 100 ms, no cross-replica lag beyond the burst itself. For that last one read the two "
            "right-hand columns, not the delays: the run's commits (first to last), and its first commit "
            "to the last delivery to any watcher. A replica that also serves the watchers commits the "
            "burst more slowly (fanning out takes its event loop between commits), so its deliveries "
            "follow the commits closely; with the watchers on B, A commits the burst sooner and B's "
            "deliveries trail the commits by the backlog. The burst reaches every watcher in about the "
            "same time either way.",
            "",
            _table(
                [
                    "configuration",
                    "load",
                    "watchers",
                    "events",
                    "deliveries/s",
                    "p50 ms",
                    "p99 ms",
                    "run's commits s",
                    "first commit to last delivery s",
                    "complete",
                ],
                rows,
            ),
            "",
        ]
    if "reads" in results:
        rows = []
        for o in results["reads"]:
            fixed = o["fixed"]
            for query in reads.QUERIES:
                rows.append(
                    [
                        o["configuration"],
                        query,
                        fixed["p50_ms"][query],
                        fixed["p95_ms"][query],
                        fixed["p99_ms"][query],
                    ]
                )
        rate = results["reads"][0]["fixed"]["rate"] if results["reads"] else 0
        sustained = [
            [
                o["configuration"],
                o["sustained_rate"],
                ", ".join(f"{r['rate']:g}:{r['overall_p95_ms']:g}" for r in o["ladder"]),
            ]
            for o in results["reads"]
        ]
        out += [
            "## Reads",
            "",
            f"1,000 sessions and 100,000 events; latency at {rate:g} requests/s, open loop (a late request "
            "is charged for its wait). The ladder then climbs until the server saturates; the sustained "
            "rate is the highest with every request answered and p95 < 20 ms (target: ≥ 200/s).",
            "",
            _table(["configuration", "query", "p50 ms", "p95 ms", "p99 ms"], rows),
            "",
            _table(
                ["configuration", "sustained requests/s (p95 < 20 ms)", "ladder (rate:p95 ms)"], sustained
            ),
            "",
        ]
    if "burst" in results:
        rows = [
            [
                b["configuration"],
                b["sessions"],
                b["refused"],
                b["completed"],
                b["failed"],
                b["seconds_until_all_finished"],
                b["max_queued"],
                b["peak_memory_mb"],
                b["budget_mb"] or "-",
            ]
            for b in results["burst"]
        ]
        out += [
            "## A burst of new sessions",
            "",
            "N `startRun` calls at once, each a new session, rate limits off. Peak memory is the summed RSS "
            "of the servers' process trees (server, sandboxes, CLIs; shared pages counted in every process, "
            "so it overstates); the budget is the agent memory budget the replicas report on /metrics. "
            "Target: all finish, none fails, memory inside the budget.",
            "",
            _table(
                [
                    "configuration",
                    "sessions",
                    "refused",
                    "completed",
                    "failed",
                    "all done s",
                    "max queued",
                    "peak MB",
                    "budget MB",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(out)


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    if "first_answer" in results:
        summaries = results["first_answer"]
        names = [s["configuration"] for s in summaries]
        xs = range(len(names))
        ax.bar([x - 0.27 for x in xs], [s["cold_ratio"] for s in summaries], 0.27, label="cold")
        kept_open = [s["follow_up_ratio"] for s in summaries]
        ax.bar(list(xs), kept_open, 0.27, label="follow-up, kept-open subscription")
        ax.bar(
            [x + 0.27 for x in xs],
            [s["follow_up_resubscribe_ratio"] for s in summaries],
            0.27,
            label="follow-up, new subscription (afterSeq)",
        )
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(list(xs), names, rotation=15, fontsize=8)
        ax.set_ylabel("x bare SDK (median)")
        ax.legend()
    ax.set_title("Time to first answer")
    ax = axes[0][1]
    if "fanout" in results:
        burst_rows = [f for f in results["fanout"] if f["workload"] == "burst"]
        for name in dict.fromkeys(f["configuration"] for f in burst_rows):
            rows = sorted((f for f in burst_rows if f["configuration"] == name), key=lambda f: f["watchers"])
            ax.plot(
                [f["watchers"] for f in rows], [f["deliveries_per_second"] for f in rows], "o-", label=name
            )
        ax.axhline(20_000, color="grey", linestyle="--", linewidth=0.8, label="target")
        ax.set_xscale("log")
        ax.set_xlabel("watchers")
        ax.set_ylabel("deliveries/s (burst)")
        ax.legend(fontsize=8)
    ax.set_title("Fan-out")
    ax = axes[1][0]
    if "reads" in results:
        for o in results["reads"]:
            ladder = o["ladder"]
            ax.plot(
                [r["rate"] for r in ladder],
                [r["overall_p95_ms"] for r in ladder],
                "o-",
                label=o["configuration"],
            )
        ax.axhline(20, color="grey", linestyle="--", linewidth=0.8, label="20 ms")
        ax.set_yscale("log")
        ax.set_xlabel("requests/s")
        ax.set_ylabel("p95 ms")
        ax.legend(fontsize=8)
    ax.set_title("Reads: p95 as the rate climbs")
    ax = axes[1][1]
    if "burst" in results:
        for b in results["burst"]:
            timeline = b["memory_timeline"]
            line = ax.plot([t for t, _ in timeline], [mb for _, mb in timeline], label=b["configuration"])
            if b["budget_mb"]:
                ax.axhline(b["budget_mb"], color=line[0].get_color(), linestyle="--", linewidth=0.8)
        ax.set_xlabel("seconds since the burst")
        ax.set_ylabel("RSS of the server trees, MB (dashed: budget)")
        ax.legend(fontsize=8)
    ax.set_title(f"{results['burst'][0]['sessions'] if 'burst' in results else 'N'} sessions at once")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)


def save(results: dict[str, Any], raw: Path) -> None:
    """After every part, so a later part's failure loses nothing measured."""
    raw.parent.mkdir(exist_ok=True)
    raw.write_text(json.dumps(results, indent=2))


async def main(args: argparse.Namespace, raw: Path) -> dict[str, Any]:
    parts = args.only.split(",") if args.only else list(PARTS)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
    }
    if "first-answer" in parts:
        print("== first answer", flush=True)
        samples = await first_answer.main(4 if args.quick else 10, warm_pool=2)
        summaries = first_answer.summarise(samples)
        print(first_answer.report(summaries), flush=True)
        results["first_answer"] = [asdict(s) for s in summaries]
        save(results, raw)
    if "fanout" in parts:
        print("== fan-out", flush=True)
        figures = await run_fanout([1, 10, 100], 500 if args.quick else 2000, 150 if args.quick else 300)
        print(fanout.report(figures), flush=True)
        results["fanout"] = [asdict(f) for f in figures]
        save(results, raw)
    if "reads" in parts:
        print("== reads", flush=True)
        namespace = argparse.Namespace(
            sessions=1000,
            events_per_session=100,
            rate=20,
            seconds=3 if args.quick else 6,
            ladder=reads.DEFAULT_LADDER,
        )
        outcomes = await reads.main(namespace)
        print(reads.report(outcomes), flush=True)
        results["reads"] = [asdict(o) for o in outcomes]
        save(results, raw)
    if "burst" in parts:
        print("== burst", flush=True)
        bursts = await burst.main(30 if args.quick else 100, timeout=900)
        print(burst.report(bursts), flush=True)
        results["burst"] = [asdict(b) for b in bursts]
        save(results, raw)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller loads (~10 min)")
    parser.add_argument("--only", default="", help=f"comma-separated parts of: {','.join(PARTS)}")
    arguments = parser.parse_args()
    raw = ROOT / "benchmarks" / "results" / f"all-{datetime.now():%Y%m%dT%H%M%S}.json"
    everything = asyncio.run(main(arguments, raw))
    if not arguments.only:
        DOC.write_text(markdown(everything, arguments) + "\n")
        plot(everything)
        print(f"\nwritten: {DOC.relative_to(ROOT)}, {PLOT.relative_to(ROOT)}, {raw.relative_to(ROOT)}")
    else:
        print(f"\nwritten: {raw.relative_to(ROOT)} (docs/benchmarks.md is only rewritten by a full run)")
