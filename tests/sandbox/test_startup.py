"""Where the sandbox cannot work, the server says so in one line and starts no agent; SANDBOX=off is the
operator's explicit way out, and says so too."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from api.runtime.sdk_adapter import bundled_cli_path
from api.sandbox.bubblewrap import SandboxTools, SandboxUnavailable
from api.scripted_model.server import ScriptedModelServer
from tests.conftest import Stack, start_stack
from tests.documents import start_ok, start_run, wait_for_run

FAILING_BWRAP = """#!/bin/sh
echo "bwrap: setting up uid map: Permission denied" >&2
exit 1
"""


@pytest.fixture
async def special_stack(
    request: pytest.FixtureRequest, tmp_path: Path, scripted_model: ScriptedModelServer
) -> AsyncIterator[Stack]:
    overrides = dict(request.param)
    if overrides.get("sandbox_bwrap") == "FAILING":
        fake = tmp_path / "bwrap"
        fake.write_text(FAILING_BWRAP)
        fake.chmod(0o755)
        overrides["sandbox_bwrap"] = str(fake)
    running = await start_stack("embedded", tmp_path / "data", scripted_model, **overrides)
    try:
        yield running
    finally:
        await running.api.stop()


async def readiness(stack: Stack) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api.base_url) as http:
        return await http.get("/readyz")


async def refused_start(stack: Stack) -> dict[str, object]:
    async with stack.client() as client:
        refused = await start_run(client, prompt="hello")
        listed = await client.execute("{ sessions { edges { node { id } } } }")
    assert refused["__typename"] == "PolicyViolationError", refused
    assert refused["rule"] == "sandbox"
    # Nothing was written for a run that could never be confined.
    assert listed["sessions"]["edges"] == []
    return refused


@pytest.mark.parametrize("special_stack", [{"sandbox_bwrap": "/nonexistent/bwrap"}], indirect=True)
async def test_without_bubblewrap_runs_are_refused_with_the_fix(special_stack: Stack) -> None:
    refused = await refused_start(special_stack)
    assert "bubblewrap (/nonexistent/bwrap) is not installed" in str(refused["message"])
    assert "apt-get install bubblewrap" in str(refused["message"])
    ready = await readiness(special_stack)
    assert ready.status_code == 503
    assert ready.json()["sandbox"] is False
    assert "apt-get install bubblewrap" in ready.json()["sandboxMode"]


@pytest.mark.parametrize("special_stack", [{"sandbox_bwrap": "FAILING"}], indirect=True)
async def test_without_user_namespaces_runs_are_refused_with_the_fix(special_stack: Stack) -> None:
    refused = await refused_start(special_stack)
    message = str(refused["message"])
    assert "setting up uid map: Permission denied" in message
    assert "unprivileged user namespaces" in message
    assert "SANDBOX=off" in message
    assert (await readiness(special_stack)).status_code == 503


@pytest.mark.parametrize("special_stack", [{"sandbox": "off"}], indirect=True)
async def test_sandbox_off_is_the_operators_explicit_choice(special_stack: Stack) -> None:
    ready = await readiness(special_stack)
    assert ready.status_code == 200
    assert ready.json()["sandboxMode"].startswith("off")
    async with special_stack.client() as client:
        started = await start_ok(client, prompt="[scenario:echo] hi")
        assert (await wait_for_run(client, started["run"]["id"]))["status"] == "COMPLETED"


async def test_a_sandboxed_server_is_ready_and_says_so(stack: Stack) -> None:
    ready = await readiness(stack)
    assert ready.status_code == 200
    assert ready.json()["sandbox"] is True
    assert ready.json()["sandboxMode"] == "bubblewrap"


def test_socat_is_needed_only_for_the_egress_relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The model is the gateway's socket, bound in (ANTHROPIC_UNIX_SOCKET): only SANDBOX_EGRESS_HOSTS's
    # relay on loopback needs socat. A PATH with bwrap and no socat:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    (bin_dir / "bwrap").symlink_to(bwrap)
    monkeypatch.setenv("PATH", str(bin_dir))
    cli = bundled_cli_path()
    tools = SandboxTools.find(cli)
    assert isinstance(tools, SandboxTools)
    assert tools.relay is None
    refused = SandboxTools.find(cli, need_relay=True)
    assert isinstance(refused, SandboxUnavailable)
    assert "socat" in refused.reason
