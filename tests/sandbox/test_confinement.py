"""Tenant B's agent, with Bash allowed, tries to reach what is not its own. Each attempt fails, while its
own workspace keeps working. Real CLI in the real sandbox, on both storage modes.

One Bash call runs every probe and prints `name=value` lines, so a whole attack costs one agent turn.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.documents import EVENTS, start_ok, wait_for_run, workspace_of

# Set in the server's own environment (the API runs in this process): no sandbox may ever see it.
CANARY = "server-secret-canary-5f1d"
OPERATOR_KEY = "scripted-model-key"
HOST_TMP_MARKER = Path("/tmp") / f"sandbox-test-marker-{os.getpid()}"


def bash_turn(command: str) -> str:
    """A prompt that makes the scripted model run `command` with the Bash tool, then stop."""
    script = {
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": command}}]},
            {"content": [{"type": "text", "text": "done"}]},
        ]
    }
    return "[scenario]" + json.dumps(script)


async def run_bash(stack: Stack, key: str, command: str, session_id: str | None = None) -> tuple[str, str]:
    """Run `command` as that tenant's agent; what the tool printed, and the session."""
    async with stack.client(key) as client:
        fields: dict[str, Any] = {"prompt": bash_turn(command), "allowedTools": ["Bash"]}
        if session_id:
            fields["sessionId"] = session_id
        started = await start_ok(client, **fields)
        run = await wait_for_run(client, started["run"]["id"], timeout=90)
        assert run["status"] == "COMPLETED", run
        events = (await client.execute(EVENTS, {"sessionId": started["session"]["id"], "first": 500}))[
            "events"
        ]
    results = [
        block
        for event in events
        if event["payload"]["__typename"] == "UserMessage"
        for block in event["payload"]["content"]
        if block["__typename"] == "ToolResultBlock"
    ]
    assert results, events
    content = results[-1]["content"]
    return (content if isinstance(content, str) else json.dumps(content)), started["session"]["id"]


def unmatchable(text: str) -> str:
    """A grep pattern for `text` that does not match itself: `secret` becomes `secre[t]`."""
    return shlex.quote(f"{text[:-1]}[{text[-1]}]")


def probe_lines(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.isidentifier():
            found[name] = value.strip()
    return found


@dataclass
class Attack:
    victim_workspace: Path
    probes: dict[str, str]
    raw: str


@pytest.fixture(scope="module")
async def attack(stack: Stack) -> AsyncIterator[Attack]:
    os.environ["SANDBOX_TEST_CANARY"] = CANARY
    HOST_TMP_MARKER.write_text("host")
    try:
        async with stack.client() as client:
            victim = await start_ok(client, prompt="[scenario:write-file]", permissionMode="ACCEPT_EDITS")
            assert (await wait_for_run(client, victim["run"]["id"]))["status"] == "COMPLETED"
        victim_ws = workspace_of(stack.data_dir, victim["session"]["id"])
        secret = victim_ws / "hello.txt"
        assert secret.read_text() == "hello\n"
        data_dir = stack.data_dir.resolve()
        q = shlex.quote
        command = "\n".join(
            [
                'echo "uid=$(id -u)"',
                f'echo "absolute=$(cat {q(str(secret))} 2>&1)"',
                # From B's workspace up to DATA_DIR/tenants and down into A's session.
                f'echo "relative=$(cat ../../../../{q(str(secret.relative_to(data_dir / "tenants")))} 2>&1)"',
                f"ln -s {q(str(secret))} stolen.txt",
                'echo "symlink=$(cat stolen.txt 2>&1)"',
                f'echo "server_environ=$(cat /proc/{os.getpid()}/environ 2>&1 | tr "\\0" " " | head -c 200)"',
                # The patterns are written so that the probe's own text (in its process) cannot match.
                f'echo "canary=$(cat /proc/*/environ 2>/dev/null | tr "\\0" "\\n" '
                f'| grep -c {unmatchable(CANARY)})"',
                f'echo "operator_key=$(cat /proc/*/environ 2>/dev/null | tr "\\0" "\\n" '
                f'| grep -c {unmatchable(OPERATOR_KEY)})"',
                'echo "api_key_prefix=${ANTHROPIC_API_KEY:0:5}"',
                "for port in 5432 6379; do",
                '  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then r=open; else r=closed; fi',
                '  echo "port_$port=$r"',
                "done",
                f'echo "signal_server=$(kill -0 {os.getpid()} 2>&1 && echo delivered)"',
                f'echo "database=$(ls {q(str(data_dir / "claude-agent-api.sqlite3"))} 2>&1)"',
                f'echo "tenants=$(ls {q(str(data_dir / "tenants"))} 2>&1 | tr "\\n" " ")"',
                # /etc/localtime is a link into the read-only /usr (api/sandbox/bubblewrap.py).
                'echo "localtime=$(readlink /etc/localtime)"',
                "for target in /usr/pwned /etc/pwned /pwned /etc/localtime "
                f"{q(str(data_dir / 'pwned'))} {q(str(victim_ws / 'pwned'))}; do",
                '  if touch "$target" 2>/dev/null; then echo "wrote_$RANDOM=$target"; fi',
                "done",
                f'echo "host_tmp=$(ls {q(str(HOST_TMP_MARKER))} 2>&1)"',
                'echo "processes=$(ls /proc | grep -c "^[0-9]")"',
                # The CLI reaches the model over the gateway's socket: no relay listens on loopback.
                'echo "listening=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c " 0A ")"',
                'echo own > mine.txt && echo "own_write=$(cat mine.txt)"',
            ]
        )
        output, _ = await run_bash(stack, stack.other_key, command)
        yield Attack(victim_workspace=victim_ws, probes=probe_lines(output), raw=output)
    finally:
        os.environ.pop("SANDBOX_TEST_CANARY", None)
        HOST_TMP_MARKER.unlink(missing_ok=True)


def test_the_agent_is_not_root(attack: Attack) -> None:
    assert attack.probes["uid"] == "1000", attack.raw


def test_another_tenants_file_cannot_be_read_by_any_path(attack: Attack) -> None:
    for probe in ("absolute", "relative", "symlink"):
        assert attack.probes[probe] != "hello", (probe, attack.raw)
        assert "No such file" in attack.probes[probe], (probe, attack.raw)


def test_server_processes_and_their_environment_are_invisible(attack: Attack) -> None:
    assert "No such file" in attack.probes["server_environ"], attack.raw
    assert attack.probes["canary"] == "0", attack.raw
    assert "delivered" not in attack.probes["signal_server"], attack.raw
    # Only the sandbox's own: its init, the CLI, this probe.
    assert int(attack.probes["processes"]) < 12, attack.raw


def test_nothing_listens_in_the_sandbox(attack: Attack) -> None:
    # The model gateway is a Unix socket bound in (ANTHROPIC_UNIX_SOCKET), not a relay on loopback; with
    # no egress allow-list there is no relay at all.
    assert attack.probes["listening"] == "0", attack.raw


def test_the_operators_key_never_enters_the_sandbox(attack: Attack) -> None:
    assert attack.probes["operator_key"] == "0", attack.raw
    assert attack.probes["api_key_prefix"] == "cagw-", attack.raw


def test_local_services_are_unreachable(attack: Attack) -> None:
    assert attack.probes["port_5432"] == "closed", attack.raw
    assert attack.probes["port_6379"] == "closed", attack.raw


def test_the_database_and_other_sessions_are_out_of_sight(attack: Attack) -> None:
    assert "No such file" in attack.probes["database"], attack.raw
    victim_tenant = attack.victim_workspace.parents[2].name
    # Only the agent's own tenant folder exists in its view, and only its own session in that.
    assert victim_tenant not in attack.probes["tenants"], attack.raw
    assert len(attack.probes["tenants"].split()) == 1, attack.raw


def test_nothing_outside_the_workspace_can_be_written(attack: Attack, stack: Stack) -> None:
    written = [value for name, value in attack.probes.items() if name.startswith("wrote_")]
    # System folders are read-only; DATA_DIR's path inside is at most scaffolding on the private /tmp.
    assert not {"/usr/pwned", "/etc/pwned", "/pwned", "/etc/localtime"} & set(written), attack.raw
    assert not (attack.victim_workspace / "pwned").exists()
    assert not (stack.data_dir / "pwned").exists()
    assert not Path("/usr/pwned").exists()
    assert not Path("/etc/pwned").exists()


def test_the_time_zone_is_a_link_as_on_the_host(attack: Attack) -> None:
    # A plain file there makes the CLI's ICU compare it with every zone file at each start (~60 ms).
    host = Path("/etc/localtime")
    if host.is_symlink():
        assert attack.probes["localtime"] == os.readlink(host), attack.raw


def test_the_agents_own_workspace_works_and_tmp_is_private(attack: Attack) -> None:
    assert attack.probes["own_write"] == "own", attack.raw
    assert "No such file" in attack.probes["host_tmp"], attack.raw


async def test_file_checkpoints_stay_in_the_sessions_own_agent_state(stack: Stack) -> None:
    session_id = None
    async with stack.client() as client:
        # The second write of the same file is what makes the CLI keep a backup of it.
        for _ in range(2):
            fields = {"prompt": "[scenario:write-file]", "permissionMode": "ACCEPT_EDITS"}
            started = await start_ok(client, **fields, **({"sessionId": session_id} if session_id else {}))
            session_id = started["session"]["id"]
            assert (await wait_for_run(client, started["run"]["id"]))["status"] == "COMPLETED"
    assert session_id is not None
    agent_dir = workspace_of(stack.data_dir, session_id).parent / "agent"
    # The Write tool's backups, which a rewind restores from, are the session's own.
    assert list((agent_dir / "file-history" / session_id).iterdir())
    assert (agent_dir / "projects").is_dir()


async def test_a_follow_up_turn_resumes_inside_the_sandbox(stack: Stack) -> None:
    first, session_id = await run_bash(stack, stack.other_key, "echo remembered > note.txt; echo first=ok")
    assert probe_lines(first)["first"] == "ok"
    # Stop the live CLI so the next turn must start a new sandbox and resume from the transcript.
    actor = stack.api.services.run_manager._actors.get(session_id)
    if actor is not None:
        await actor._disconnect()
    second, _ = await run_bash(stack, stack.other_key, 'echo "note=$(cat note.txt)"', session_id=session_id)
    assert probe_lines(second)["note"] == "remembered"
