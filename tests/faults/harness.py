"""What every fault scenario shares: a client that resumes from its last seq, and the checks on what it saw.

The client is the one docs/api.md describes: it watches `sessionEvents`, and whenever its socket closes or
its subscription ends early it reconnects (to the next replica in its list) with `afterSeq` = the last seq
it holds. A scenario passes when that client ends up with the seqs 1..n exactly (n = the session's
lastSeq), the run reads final with a reason, and it got there within a generous bound. How long recovery
took is recorded for the report at the end of the run (see conftest.py) and docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.documents import RUN, SESSION, watch
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.graphql_ws import (
    ConnectionClosedWithCode,
    GraphQLWSClient,
    GraphQLWSError,
    SubscriptionCompleted,
)

FINAL = frozenset({"COMPLETED", "FAILED", "INTERRUPTED"})
MASKED = "Unexpected error."


@dataclass
class Recovery:
    """One scenario's figures, printed at the end of the session."""

    scenario: str
    seconds: float
    measured: str
    outcome: str
    events: int
    reconnects: int
    longest_silence: float


RECOVERIES: list[Recovery] = []


def record(
    scenario: str, seconds: float, measured: str, watcher: ResumingClient, run: dict[str, Any]
) -> None:
    """Keep (and print) how long the client took to recover: `measured` says from what to what."""
    outcome = run["status"] + (f" ({run['error']})" if run.get("error") else "")
    recovery = Recovery(
        scenario,
        seconds,
        measured,
        outcome,
        len(watcher.events),
        len(watcher.interruptions),
        watcher.longest_silence,
    )
    RECOVERIES.append(recovery)
    print(
        f"fault {scenario}: {seconds:.2f} s ({measured}), run {outcome}, {recovery.events} events,"
        f" {recovery.reconnects} reconnect(s), longest silence {recovery.longest_silence:.2f} s"
    )


@dataclass
class ResumingClient:
    """Watches one session until a run is final, resuming with its last seq across closes and replicas."""

    ws_urls: list[str]
    token: str
    session_id: str
    events: list[dict[str, Any]] = field(default_factory=list)
    # When each event arrived (the loop's clock), to time the gap before a verdict.
    arrivals: list[float] = field(default_factory=list)
    interruptions: list[str] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    final_at: float | None = None
    _index: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.events]

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def until_final(self, run_id: str, *, timeout: float = 90) -> dict[str, Any]:
        """Read (and resume) until `run_id`'s final RunStatusChanged; returns that payload."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = 0.2
        while True:
            remaining = deadline - loop.time()
            assert remaining > 0, (
                f"run {run_id} not final at the client after {timeout}s; saw {len(self.events)} events,"
                f" interruptions {self.interruptions[-5:]}"
            )
            url = self.ws_urls[self._index % len(self.ws_urls)]
            try:
                final = await self._read_from(url, run_id, deadline)
            except (ConnectionClosedWithCode, GraphQLWSError, SubscriptionCompleted, OSError) as exc:
                self.interruptions.append(f"{url}: {type(exc).__name__} {str(exc)[:160]}")
            except _Resume as exc:
                self.interruptions.append(f"{url}: {exc}")
            else:
                self.final_at = loop.time()
                return final
            # The next replica in the list; a short, growing pause so a dead one is not hammered.
            self._index += 1
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, 2.0)

    async def _read_from(self, url: str, run_id: str, deadline: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        try:
            client = await GraphQLWSClient.open(
                url, token=self.token, ack_timeout=max(0.5, min(10.0, deadline - loop.time()))
            )
        except TimeoutError as exc:
            raise _Resume("no connection_ack") from exc
        try:
            sub = await watch(client, self.session_id, after_seq=self.last_seq)
            while True:
                try:
                    payload = await sub.next(timeout=max(0.1, deadline - loop.time()))
                except TimeoutError:
                    # The overall deadline, not a fault to resume from: the caller's assertion reports it.
                    raise _Resume("deadline passed while reading") from None
                if payload.get("errors"):
                    self.errors.extend(payload["errors"])
                    raise _Resume(f"error payload {payload['errors']}")
                event = payload["data"]["sessionEvents"]
                if event["ephemeral"]:
                    continue
                self.events.append(event)
                self.arrivals.append(loop.time())
                self._arrived.set()
                body = event["payload"]
                if (
                    body["__typename"] == "RunStatusChanged"
                    and body["runId"] == run_id
                    and body["status"] in FINAL
                ):
                    return dict(body)
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    async def until_events(self, count: int, *, timeout: float = 60) -> None:
        """Until the client holds at least `count` events (while `until_final` runs in another task)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < count:
            self._arrived.clear()
            remaining = deadline - loop.time()
            assert remaining > 0, f"only {len(self.events)} of {count} events after {timeout}s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    @property
    def longest_silence(self) -> float:
        """The longest time between two events reaching the client."""
        return max((b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)), default=0.0)

    def arrival_of(self, seq: int) -> float:
        """When the client first held an event with a seq of at least `seq`."""
        return next(at for event, at in zip(self.events, self.arrivals, strict=True) if event["seq"] >= seq)

    @property
    def run_started_at(self) -> float:
        """When the client saw the run go RUNNING."""
        return next(
            at
            for event, at in zip(self.events, self.arrivals, strict=True)
            if event["payload"].get("status") == "RUNNING"
        )

    @property
    def masked_errors(self) -> list[Any]:
        return [error for error in self.errors if error.get("message") == MASKED]


class _Resume(Exception):
    """The stream stopped in a way a client retries."""


async def last_seq(client: GraphQLHttpClient, session_id: str) -> int:
    return int((await client.execute(SESSION, {"id": session_id}))["session"]["lastSeq"])


async def assert_lossless_and_final(
    watcher: ResumingClient, client: GraphQLHttpClient, run_id: str
) -> dict[str, Any]:
    """0 lost, 0 duplicated (seqs exactly 1..lastSeq), the run final with a reason if it failed, no masked
    errors; returns the run."""
    final_seq = await last_seq(client, watcher.session_id)
    seqs = watcher.seqs
    assert seqs == list(range(1, final_seq + 1)), f"{describe(seqs)} (lastSeq {final_seq})"
    run: dict[str, Any] = (await client.execute(RUN, {"id": run_id}))["run"]
    assert run["status"] in {"COMPLETED", "FAILED"}, run
    if run["status"] == "FAILED":
        assert run["error"], run
    # The run's final status is the last event of the session's log, as the client saw it.
    assert watcher.events[-1]["payload"].get("status") == run["status"]
    assert not watcher.masked_errors, watcher.masked_errors
    return run


def describe(seqs: list[int]) -> str:
    counts = Counter(seqs)
    duplicates = sorted(seq for seq, n in counts.items() if n > 1)
    missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
    return f"{len(seqs)} events, duplicates {duplicates[:10]}, missing {missing[:10]}"


def cli_pids(session_id: str) -> list[int]:
    """The agent CLI processes started for a session (their command line names its id)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(session_id.encode() in part for part in cmdline) and any(
            b"claude" in part for part in cmdline[:2]
        ):
            pids.append(int(entry.name))
    return pids
