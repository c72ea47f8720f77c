"""The model gateway's own cost per model call: latency it adds and CPU it takes, beside calling the model
directly, side by side in one invocation.

    .venv/bin/python -m benchmarks.gateway [--rounds 10] [--calls 40] [--compare main]

The request is a real one: a bare SDK's CLI makes a turn and a follow-up against the scripted model, and
the follow-up's Messages API call (its body, query and headers, as the model received them) is what every
call of the benchmark sends, one call at a time, as a CLI does. The scripted model answers `[scenario:echo]`
with a short SSE stream.

Each configuration runs in its own process, so a gateway's process is charged for the gateway alone:

- direct: the benchmark's client calls the scripted model over loopback TCP, as the bare SDK does;
- gateway: the same call over the gateway's Unix socket (with an open pass), which forwards it to the
  same model. With `--compare REF`, the gateway of another git revision too (a temporary worktree, run on
  this tree's virtualenv), in the same rounds.

Rounds interleave the configurations (the order rotates) so the machine's noise hits them alike. Figures
per configuration: the medians of a call's time to the response's last byte and first body byte, the
gateway's added latency (its median minus the direct median), and the CPU its process took per call
(from /proc, all its threads). The machine is shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpcore
import httpx
import orjson
import uvloop
from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage

from api.scripted_model.server import scripted_model_cli_env
from benchmarks.revisions import ROOT, checkout

PROMPT = "[scenario:echo] hello"
FOLLOW_UP = "[scenario:echo] again"
DIRECT = "direct"
MODEL_KEY = scripted_model_cli_env("")["ANTHROPIC_API_KEY"]
# Headers a client sets for its own connection; each call's client sets them afresh.
_CONNECTION_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "x-api-key"})

# A gateway of the tree at argv[1], on uvloop as in the server, forwarding to the model at argv[2], on the
# socket argv[3]; prints an open pass's token, serves until SIGTERM.
_SERVE_GATEWAY = """
import asyncio, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import uvloop
from api.sandbox.model_gateway import ModelGateway, Upstream

async def serve() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    gateway = ModelGateway(Upstream(base_url=sys.argv[2], api_key="operator-key"), Path(sys.argv[3]))
    await gateway.start()
    issued = gateway.issue("benchmark")
    issued.open = True
    print(issued.token, flush=True)
    await stop.wait()
    await gateway.stop()

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    runner.run(serve())
"""


@dataclass
class Call:
    """One model call as the client saw it."""

    first_byte_s: float
    done_s: float


@dataclass
class Target:
    name: str
    pool: httpcore.AsyncConnectionPool
    url: str
    headers: list[tuple[bytes, bytes]]
    pid: int | None = None  # the gateway's process, whose CPU is counted
    calls: list[Call] = field(default_factory=list)
    cpu_s: float = 0.0


@dataclass(frozen=True)
class Captured:
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def cpu_seconds(pid: int) -> float:
    """CPU time of all the threads of `pid` so far (ns precision, from schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1e9


@asynccontextmanager
async def process(*command: str) -> AsyncIterator[subprocess.Popen[str]]:
    """A child process with its stdout to read, terminated and reaped afterwards."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)  # noqa: ASYNC220
    try:
        yield child
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(child.wait, 10)
        except subprocess.TimeoutExpired:
            child.kill()
            await asyncio.to_thread(child.wait)


async def first_line(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
    if not line:
        raise RuntimeError(f"{child.args!r} exited before it was ready")
    return line.strip()


async def capture(model_url: str, work: Path) -> Captured:
    """A CLI's follow-up model call, as the scripted model recorded it."""
    options = ClaudeAgentOptions(
        cwd=str(work),
        env={**scripted_model_cli_env(model_url), "CLAUDE_CONFIG_DIR": str(work / "config")},
        setting_sources=[],
    )
    async with ClaudeSDKClient(options) as client:
        for prompt in (PROMPT, FOLLOW_UP):
            await client.query(prompt)
            async for message in client.receive_response():
                if isinstance(message, ResultMessage):
                    break
    async with httpx.AsyncClient(trust_env=False) as http:
        records: list[dict[str, Any]] = (await http.get(f"{model_url}/_scripted/requests")).json()
    call = [r for r in records if r["kind"] == "conversation"][-1]
    headers = [
        (k.encode(), v.encode()) for k, v in call["headers"].items() if k.lower() not in _CONNECTION_HEADERS
    ]
    path = call["path"] + (f"?{call['query']}" if call["query"] else "")
    return Captured(path, headers, orjson.dumps(call["body"]))


async def one_call(target: Target, body: bytes) -> Call:
    started = time.perf_counter()
    first = None
    async with target.pool.stream("POST", target.url, headers=target.headers, content=body) as response:
        assert response.status == 200, response.status
        async for chunk in response.aiter_stream():
            if first is None and chunk:
                first = time.perf_counter()
    done = time.perf_counter()
    assert first is not None, "an empty answer"
    return Call(first - started, done - started)


async def batch(target: Target, body: bytes, calls: int) -> None:
    before = cpu_seconds(target.pid) if target.pid else 0.0
    for _ in range(calls):
        async with asyncio.timeout(30):  # a broken gateway fails the run, not hangs it
            target.calls.append(await one_call(target, body))
    if target.pid:
        target.cpu_s += cpu_seconds(target.pid) - before


async def run(rounds: int, calls: int, compare: str | None) -> list[Target]:
    work = Path(tempfile.mkdtemp(prefix="caga-gateway-bench-"))
    async with AsyncExitStack() as stack:
        model = await stack.enter_async_context(
            process(sys.executable, "-m", "api.scripted_model", "--port", "0", "--log-level", "warning")
        )
        model_url = (await first_line(model)).rsplit(" ", 1)[-1]
        captured = await capture(model_url, work)
        print(f"request: POST {captured.path}, {len(captured.body)} bytes of body", flush=True)
        host = model_url.removeprefix("http://")
        common = [(b"host", host.encode()), *captured.headers]
        pool = await stack.enter_async_context(httpcore.AsyncConnectionPool())
        direct_headers = [*common, (b"x-api-key", MODEL_KEY.encode())]
        targets = [Target(DIRECT, pool, model_url + captured.path, direct_headers)]
        trees: list[tuple[str, Path]] = [("gateway", ROOT)]
        if compare is not None:
            baseline = await stack.enter_async_context(checkout(compare))
            trees = [(f"gateway [{compare}]", baseline), ("gateway [this tree]", ROOT)]
        for n, (name, tree) in enumerate(trees):
            socket = work / f"gateway-{n}.sock"
            gateway = await stack.enter_async_context(
                process(sys.executable, "-c", _SERVE_GATEWAY, str(tree), model_url, str(socket))
            )
            token = await first_line(gateway)
            uds = await stack.enter_async_context(httpcore.AsyncConnectionPool(uds=str(socket)))
            headers = [*common, (b"x-api-key", token.encode())]
            targets.append(Target(name, uds, "http://sandbox" + captured.path, headers, pid=gateway.pid))
        for target in targets:  # connections, the model's and the gateways' first-call work
            await batch(target, captured.body, 5)
            target.calls.clear()
            target.cpu_s = 0.0
        for round_no in range(rounds):
            shift = round_no % len(targets)
            order = targets[shift:] + targets[:shift]
            if round_no % 2:
                order.reverse()
            for target in order:
                await batch(target, captured.body, calls)
            print(f"  round {round_no + 1}/{rounds}", flush=True)
    return targets


def report(targets: list[Target]) -> str:
    direct = statistics.median(c.done_s for c in targets[0].calls)
    header = (
        f"{'configuration':24} {'calls':>6} {'done ms':>8} {'p90 ms':>7} {'1st byte ms':>12}"
        f" {'added ms':>9} {'CPU ms/call':>12}"
    )
    lines = [header, "-" * len(header)]
    added: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for t in targets:
        done = sorted(c.done_s for c in t.calls)
        median = statistics.median(done)
        added[t.name] = median - direct
        cpu[t.name] = t.cpu_s / len(t.calls)
        lines.append(
            f"{t.name:24} {len(t.calls):>6} {median * 1e3:>8.2f} {done[int(len(done) * 0.9)] * 1e3:>7.2f}"
            f" {statistics.median(c.first_byte_s for c in t.calls) * 1e3:>12.2f}"
            + (f" {added[t.name] * 1e3:>9.2f} {cpu[t.name] * 1e3:>12.3f}" if t.pid else "")
        )
    gateways = [t.name for t in targets if t.pid]
    if len(gateways) == 2:
        old, new = gateways
        lines.append(
            f"this tree / {old.removeprefix('gateway ')}: added latency {added[new] / added[old]:.2f}x, "
            f"CPU per call {cpu[new] / cpu[old]:.2f}x"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=40, help="calls per configuration and round")
    parser.add_argument(
        "--compare", metavar="REF", help="measure this git revision's gateway beside this tree's"
    )
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        targets = runner.run(run(args.rounds, args.calls, args.compare))
    print(report(targets))


if __name__ == "__main__":
    main()
