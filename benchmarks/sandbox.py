"""Sandbox benchmark: what confinement costs a session, measured side by side in one invocation.

    .venv/bin/python -m benchmarks.sandbox [--rounds 8]

Each round starts one agent CLI sandboxed and one unconfined (interleaved, alternating which goes first),
against the scripted model, through the service's own launcher and SDK adapter, and measures:

- time to first answer: from connect() to the first AssistantMessage of a cold `[scenario:echo]` turn;
- a follow-up turn on the live CLI: send to the result;
- memory of the sandbox's own processes (bubblewrap, its init, the relay) beside the CLI's, as RSS and
  PSS (PSS shares the CLI binary's pages fairly between sessions).

The machine is shared and noisy: compare the ratios of one run. Results are printed and written to
benchmarks/results/sandbox-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from api.runtime.sdk_adapter import AgentConnection, AgentSpec
from api.sandbox.launcher import AgentLauncher
from api.scripted_model.server import ScriptedModelServer, scripted_model_cli_env
from api.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Sample:
    mode: str
    first_answer_s: float
    follow_up_s: float
    cli_rss_mb: float
    cli_pss_mb: float
    sandbox_rss_mb: float
    sandbox_pss_mb: float


def _memory_kb(pid: int) -> tuple[int, int]:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if "kB" in line}
    return values.get("Rss", 0), values.get("Pss", 0)


def _descendants(root: int) -> list[tuple[int, str]]:
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append((pid, names.get(pid, "?")))
        todo += children.get(pid, [])
    return found


async def one(launcher: AgentLauncher, tenant: str, mode: str) -> Sample:
    session_id = str(uuid.uuid4())
    paths = launcher.paths(tenant, session_id)
    launch = launcher.prepare(paths, f"bench-{session_id[:8]}")
    if launch.grant is not None:
        launch.grant.open = True
    spec = AgentSpec(
        session_id=session_id,
        cwd=str(paths.workspace),
        resume=False,
        env=launch.env,
        cli_path=launch.cli_path,
    )
    connection = AgentConnection(spec)
    started = time.perf_counter()
    try:
        await connection.connect()
        outputs = connection.outputs()
        await connection.send("[scenario:echo] hello", str(uuid.uuid4()))
        first = None
        async for output in outputs:
            if first is None and output.kind.value == "assistant":
                first = time.perf_counter() - started
            if output.is_result:
                break
        follow_started = time.perf_counter()
        await connection.send("[scenario:echo] again", str(uuid.uuid4()))
        async for output in outputs:
            if output.is_result:
                break
        follow_up = time.perf_counter() - follow_started
        process = connection._client._transport._process  # type: ignore[union-attr]
        tree = _descendants(process.pid)
        cli = [pid for pid, name in tree if name == "claude"]
        others = [pid for pid, name in tree if name != "claude"]
        cli_mem = [_memory_kb(pid) for pid in cli]
        other_mem = [_memory_kb(pid) for pid in others]
        return Sample(
            mode=mode,
            first_answer_s=first or float("nan"),
            follow_up_s=follow_up,
            cli_rss_mb=sum(m[0] for m in cli_mem) / 1024,
            cli_pss_mb=sum(m[1] for m in cli_mem) / 1024,
            sandbox_rss_mb=sum(m[0] for m in other_mem) / 1024 if mode == "sandboxed" else 0.0,
            sandbox_pss_mb=sum(m[1] for m in other_mem) / 1024 if mode == "sandboxed" else 0.0,
        )
    finally:
        await connection.close()
        await launcher.release(launch)


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        async with ScriptedModelServer() as model:
            env = {**scripted_model_cli_env(model.base_url), "CLAUDE_CODE_MAX_RETRIES": "0"}
            launchers = {}
            for mode, sandbox in (("sandboxed", "auto"), ("unconfined", "off")):
                settings = Settings(data_dir=Path(tmp) / mode, sandbox=sandbox)  # type: ignore[arg-type]
                launchers[mode] = AgentLauncher(settings, env)
                await launchers[mode].start()
                assert launchers[mode].ready, launchers[mode].describe()
            samples: list[Sample] = []
            try:
                await one(launchers["unconfined"], "warmup", "unconfined")  # page cache
                for round_no in range(rounds):
                    order = ["sandboxed", "unconfined"] if round_no % 2 == 0 else ["unconfined", "sandboxed"]
                    for mode in order:
                        samples.append(await one(launchers[mode], "bench", mode))
            finally:
                for launcher in launchers.values():
                    await launcher.stop()
    summary: dict[str, dict[str, float]] = {}
    for mode in ("sandboxed", "unconfined"):
        rows = [s for s in samples if s.mode == mode]
        summary[mode] = {
            "first_answer_median_s": statistics.median(s.first_answer_s for s in rows),
            "follow_up_median_s": statistics.median(s.follow_up_s for s in rows),
            "cli_rss_mb": statistics.median(s.cli_rss_mb for s in rows),
            "cli_pss_mb": statistics.median(s.cli_pss_mb for s in rows),
            "sandbox_rss_mb": statistics.median(s.sandbox_rss_mb for s in rows),
            "sandbox_pss_mb": statistics.median(s.sandbox_pss_mb for s in rows),
        }
    ratios = {
        "first_answer": summary["sandboxed"]["first_answer_median_s"]
        / summary["unconfined"]["first_answer_median_s"],
        "follow_up": summary["sandboxed"]["follow_up_median_s"] / summary["unconfined"]["follow_up_median_s"],
    }
    print(
        f"{'':12}{'first answer':>14}{'follow-up':>12}{'CLI RSS':>10}{'CLI PSS':>10}"
        f"{'sandbox RSS':>13}{'sandbox PSS':>13}"
    )
    for mode, row in summary.items():
        print(
            f"{mode:12}{row['first_answer_median_s']:>13.3f}s{row['follow_up_median_s']:>11.3f}s"
            f"{row['cli_rss_mb']:>8.0f}MB{row['cli_pss_mb']:>8.0f}MB"
            f"{row['sandbox_rss_mb']:>11.1f}MB{row['sandbox_pss_mb']:>11.1f}MB"
        )
    print(
        f"ratio sandboxed/unconfined: first answer {ratios['first_answer']:.2f}x, "
        f"follow-up {ratios['follow_up']:.2f}x  ({rounds} interleaved rounds, medians)"
    )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"sandbox-{datetime.now():%Y%m%d-%H%M%S}.json"
    report = {"summary": summary, "ratios": ratios, "samples": [s.__dict__ for s in samples]}
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    asyncio.run(main(parser.parse_args().rounds))
