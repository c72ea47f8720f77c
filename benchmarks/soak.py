"""Soak: minutes of mixed load on two replicas, then a check that nothing was lost and every run ended.

    .venv/bin/python -m benchmarks.soak --minutes 5 [--clients 4] [--seed 1]

Starts two API processes on a fresh PostgreSQL database and the shared Redis (loopback), with the built-in
scripted model, and runs `--clients` simulated clients until the time is up. Each client owns a session at a
time and, at random (seeded): starts runs of several kinds (echo, paced tool calls, bursts of messages,
thinking), interrupts a slow run, answers a permission request (allow or deny), drops its watcher's socket so
it resumes with afterSeq on the other replica, or moves on to a new session. Every request goes to either
replica at random. Each session has one watcher all along, which checks as it reads that every event's seq is
the last one plus 1.

Afterwards: every run must read final (COMPLETED, FAILED or INTERRUPTED), every session's log must be
1..lastSeq with no gap, and every watcher must have seen exactly that. The summary is printed and written to
benchmarks/results/soak-<timestamp>.json; the exit code is 1 if any check failed. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.documents import INTERRUPT_RUN, RUN, SESSION_EVENTS, START_RUN
from tests.support.cluster import Cluster, cluster, paced_scenario
from tests.support.graphql_ws import GraphQLWSClient, Subscription
from tests.support.servers import ApiServer, postgres_available, redis_available

RESULTS = Path(__file__).resolve().parent / "results"
FINAL = {"COMPLETED", "FAILED", "INTERRUPTED"}
LAST_SEQ = "query($id: ID!) { session(id: $id) { lastSeq } }"
LOG_PAGE = """query($sessionId: ID!, $afterSeq: Int) {
  events(sessionId: $sessionId, afterSeq: $afterSeq, first: 1000) { seq } }"""
PENDING = "query($sessionId: ID) { permissionRequests(sessionId: $sessionId, status: PENDING) { id } }"
DECIDE = """mutation($input: DecidePermissionInput!) {
  decidePermission(input: $input) { __typename ... on Error { code message } } }"""
WEIGHTS = {"run": 45, "interrupt": 15, "permission": 15, "reconnect": 15, "new-session": 10}


class RequestFailed(Exception):
    """An HTTP status other than 200 or a top-level GraphQL error."""


@dataclass
class Tally:
    """What happened, for the summary."""

    actions: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    http_statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    runs: dict[str, str] = field(default_factory=dict)  # run id -> kind
    sessions: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < 200:
            self.errors.append(text[:300])


class Api:
    """GraphQL over HTTP to either replica at random."""

    def __init__(self, c: Cluster, tally: Tally, rng: random.Random) -> None:
        self.replicas = c.replicas
        self.tally = tally
        self.rng = rng
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {c.key}"}, timeout=60, trust_env=False
        )

    def replica(self) -> ApiServer:
        return self.rng.choice(self.replicas)

    async def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(
            f"{self.replica().base_url}/graphql", json={"query": query, "variables": variables}
        )
        self.tally.http_statuses[response.status_code] += 1
        if response.status_code != 200:
            raise RequestFailed(f"HTTP {response.status_code}: {response.text[:200]}")
        body = response.json()
        if body.get("errors"):
            raise RequestFailed(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    async def aclose(self) -> None:
        await self.http.aclose()


@dataclass
class Watcher:
    """One session's watcher for the whole soak: checks seq continuity as it reads, resumes on drops."""

    cluster: Cluster
    session_id: str
    rng: random.Random
    last_seq: int = 0
    received: int = 0
    gaps: int = 0
    duplicates: int = 0
    reconnects: int = 0
    _drop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    def drop(self) -> None:
        """Cut the socket now (as a network would); the watcher resumes on a replica chosen at random."""
        self._drop.set()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        while True:
            replica = self.rng.choice(self.cluster.replicas)
            try:
                async with GraphQLWSClient.connect(replica.ws_url, token=self.cluster.key) as ws:
                    sub = await ws.subscribe(
                        SESSION_EVENTS, {"sessionId": self.session_id, "afterSeq": self.last_seq}
                    )
                    await self._read(sub, ws)
            except asyncio.CancelledError:
                raise
            except Exception:  # every way a socket can end: resume, as a client would
                pass
            self.reconnects += 1
            await asyncio.sleep(self.rng.uniform(0.05, 0.5))

    async def _read(self, sub: Subscription, ws: GraphQLWSClient) -> None:
        self._drop.clear()
        while True:
            dropping = asyncio.ensure_future(self._drop.wait())
            receiving = asyncio.ensure_future(sub.next(timeout=3600))
            try:
                done, _ = await asyncio.wait({dropping, receiving}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # Stopped: neither future may outlive the watcher (or log an unretrieved exception).
                dropping.cancel()
                receiving.cancel()
                raise
            if dropping in done:
                receiving.cancel()
                # It may have ended with the socket at the same moment: retrieve that, resume either way.
                if receiving.done() and not receiving.cancelled():
                    receiving.exception()
                ws.ws.transport.abort()
                return
            dropping.cancel()
            payload = receiving.result()
            if payload.get("errors"):
                return
            event = payload["data"]["sessionEvents"]
            if event["ephemeral"]:
                continue
            seq = event["seq"]
            if seq <= self.last_seq:
                self.duplicates += 1
                continue
            if seq != self.last_seq + 1:
                self.gaps += 1
            self.last_seq = seq
            self.received += 1


class SimulatedClient:
    """A client that acts at random until the deadline."""

    def __init__(self, c: Cluster, tally: Tally, rng: random.Random, watchers: list[Watcher]) -> None:
        self.cluster = c
        self.tally = tally
        self.rng = rng
        self.api = Api(c, tally, rng)
        self.watchers = watchers
        self.session_id: str | None = None
        self.watcher: Watcher | None = None

    async def loop(self, deadline: float) -> None:
        try:
            while time.monotonic() < deadline:
                action = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                if self.session_id is None:
                    action = "new-session"
                self.tally.actions[action] += 1
                try:
                    await asyncio.wait_for(self.act(action), timeout=180)
                except (RequestFailed, TimeoutError, OSError) as exc:
                    self.tally.error(f"{action}: {type(exc).__name__} {exc}")
        finally:
            await self.api.aclose()

    async def act(self, action: str) -> None:
        if action == "new-session":
            self.session_id = None
            await self.start("echo", "a new session")
            return
        if action == "reconnect":
            assert self.watcher is not None
            self.watcher.drop()
        elif action == "run":
            kind, prompt = self.rng.choice(
                [
                    ("echo", f"hello {self.rng.randrange(10**6)}"),
                    ("paced", paced_scenario(steps=self.rng.randint(2, 12), delay_ms=40)),
                    ("burst", f"[scenario:many:{self.rng.randint(20, 300)}]"),
                    ("thinking", "[scenario:thinking]"),
                ]
            )
            await self.start(kind, prompt)
        elif action == "interrupt":
            run_id = await self.start("interrupt", "[scenario:slow]", wait=False)
            await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            await self.api.execute(INTERRUPT_RUN, {"runId": run_id})
            await self.until_final(run_id)
        elif action == "permission":
            run_id = await self.start("permission", "[scenario:write-file]", wait=False)
            request_id = await self.pending_request(run_id)
            if request_id is not None:
                decision = self.rng.choice(["ALLOW", "DENY"])
                data = await self.api.execute(
                    DECIDE, {"input": {"requestId": request_id, "decision": decision}}
                )
                self.tally.outcomes[f"permission {decision} -> {data['decidePermission']['__typename']}"] += 1
            await self.until_final(run_id)

    async def start(self, kind: str, prompt: str, *, wait: bool = True) -> str:
        fields: dict[str, Any] = {"prompt": prompt}
        if self.session_id is not None:
            fields["sessionId"] = self.session_id
        result = (await self.api.execute(START_RUN, {"input": fields}))["startRun"]
        if result["__typename"] != "StartRunSuccess":
            raise RequestFailed(f"startRun: {result}")
        run_id: str = result["run"]["id"]
        self.tally.runs[run_id] = kind
        if self.session_id is None:
            self.session_id = result["session"]["id"]
            self.tally.sessions.append(self.session_id)
            self.watcher = Watcher(self.cluster, self.session_id, random.Random(self.rng.random()))
            self.watchers.append(self.watcher)
            self.watcher.start()
        if wait:
            await self.until_final(run_id)
        return run_id

    async def until_final(self, run_id: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            run = (await self.api.execute(RUN, {"id": run_id}))["run"]
            if run["status"] in FINAL:
                self.tally.outcomes[f"{self.tally.runs[run_id]} {run['status']}"] += 1
                status: str = run["status"]
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout}s")
            await asyncio.sleep(0.25)

    async def pending_request(self, run_id: str, timeout: float = 60) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = (await self.api.execute(PENDING, {"sessionId": self.session_id}))["permissionRequests"]
            if pending:
                request_id: str = pending[0]["id"]
                return request_id
            run = (await self.api.execute(RUN, {"id": run_id}))["run"]
            if run["status"] in FINAL:
                return None
            await asyncio.sleep(0.2)
        return None


@dataclass
class Summary:
    minutes: float
    clients: int
    seed: int
    sessions: int
    runs: int
    runs_per_minute: float
    events_logged: int
    watcher_events: int
    watcher_reconnects: int
    actions: dict[str, int]
    outcomes: dict[str, int]
    http_statuses: dict[str, int]
    errors: list[str]
    runs_not_final: list[str]
    sessions_with_log_gaps: list[str]
    watcher_gaps: int
    watcher_duplicates: int
    watchers_behind: list[str]

    @property
    def ok(self) -> bool:
        return not (
            self.runs_not_final
            or self.sessions_with_log_gaps
            or self.watcher_gaps
            or self.watcher_duplicates
            or self.watchers_behind
            or any(int(status) >= 500 for status in self.http_statuses)
        )


async def check(c: Cluster, tally: Tally, watchers: list[Watcher]) -> dict[str, Any]:
    """After the load: every run final, every log gapless, every watcher caught up exactly."""
    api = Api(c, tally, random.Random(0))
    try:
        not_final: list[str] = []
        deadline = time.monotonic() + 180
        for run_id in tally.runs:
            while True:
                status = (await api.execute(RUN, {"id": run_id}))["run"]["status"]
                if status in FINAL or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            if status not in FINAL:
                not_final.append(f"{run_id} {status}")
        gaps: list[str] = []
        events_logged = 0
        last_seqs: dict[str, int] = {}
        for session_id in tally.sessions:
            seqs: list[int] = []
            while page := (
                await api.execute(LOG_PAGE, {"sessionId": session_id, "afterSeq": seqs[-1] if seqs else 0})
            )["events"]:
                seqs += [event["seq"] for event in page]
            last = int((await api.execute(LAST_SEQ, {"id": session_id}))["session"]["lastSeq"])
            last_seqs[session_id] = last
            events_logged += len(seqs)
            if seqs != list(range(1, last + 1)):
                gaps.append(session_id)
        # Watchers catch up within a few seconds of the last event (bounded wait).
        behind: list[str] = []
        deadline = time.monotonic() + 60
        for watcher in watchers:
            while watcher.last_seq < last_seqs[watcher.session_id] and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            if watcher.last_seq != last_seqs[watcher.session_id]:
                behind.append(f"{watcher.session_id} at {watcher.last_seq}/{last_seqs[watcher.session_id]}")
        return {
            "runs_not_final": not_final,
            "sessions_with_log_gaps": gaps,
            "events_logged": events_logged,
            "watchers_behind": behind,
        }
    finally:
        await api.aclose()


async def soak(minutes: float, clients: int, seed: int) -> Summary:
    if not (postgres_available() and redis_available()):
        raise SystemExit("the soak needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379")
    tally = Tally()
    watchers: list[Watcher] = []
    with tempfile.TemporaryDirectory(prefix="caga-soak-") as tmp:
        # No CLI retries: a failure shows at once instead of after minutes of backoff.
        async with cluster(Path(tmp), env={"CLAUDE_CODE_MAX_RETRIES": "0"}) as c:
            await c.wait_ready()
            began = time.monotonic()
            deadline = began + minutes * 60
            rng = random.Random(seed)
            simulated = [
                SimulatedClient(c, tally, random.Random(rng.random()), watchers) for _ in range(clients)
            ]
            await asyncio.gather(*(client.loop(deadline) for client in simulated))
            elapsed = time.monotonic() - began
            print(f"soak: load done after {elapsed / 60:.1f} min; checking", file=sys.stderr)
            checked = await check(c, tally, watchers)
            for watcher in watchers:
                await watcher.stop()
    return Summary(
        minutes=round(elapsed / 60, 2),
        clients=clients,
        seed=seed,
        sessions=len(tally.sessions),
        runs=len(tally.runs),
        runs_per_minute=round(len(tally.runs) / (elapsed / 60), 1),
        events_logged=checked["events_logged"],
        watcher_events=sum(w.received for w in watchers),
        watcher_reconnects=sum(w.reconnects for w in watchers),
        actions=dict(tally.actions),
        outcomes=dict(sorted(tally.outcomes.items())),
        http_statuses={str(k): v for k, v in sorted(tally.http_statuses.items())},
        errors=tally.errors,
        runs_not_final=checked["runs_not_final"],
        sessions_with_log_gaps=checked["sessions_with_log_gaps"],
        watcher_gaps=sum(w.gaps for w in watchers),
        watcher_duplicates=sum(w.duplicates for w in watchers),
        watchers_behind=checked["watchers_behind"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the load lasts (default 5)")
    parser.add_argument("--clients", type=int, default=4, help="simulated clients at once (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random choices (default 1)")
    args = parser.parse_args()
    summary = asyncio.run(soak(args.minutes, args.clients, args.seed))
    text = json.dumps({**asdict(summary), "ok": summary.ok}, indent=2)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak-{datetime.now():%Y%m%d-%H%M%S}.json").write_text(text + "\n")
    print("soak: " + ("every check passed" if summary.ok else "CHECKS FAILED"), file=sys.stderr)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
