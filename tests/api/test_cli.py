"""The console script as an operator uses it: keys, migrate, doctor, and serve on the embedded default."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from api.sandbox.launcher import AgentLauncher
from api.scripted_model.server import ScriptedModelServer
from api.settings import Settings
from tests.documents import start_ok, wait_for_run
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import (
    ApiServer,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    minimal_env,
    postgres_available,
    redis_available,
)

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        env=minimal_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def cli_async(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The CLI without blocking the event loop (for tests whose servers run on it); (exit code, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        *args,
        cwd=ROOT,
        env=minimal_env(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode()


def lines_by_check(output: str) -> dict[str, str]:
    """doctor's output as {check name: its line}, e.g. {"database": "FAIL database    no database at …"}."""
    checks = ("agent CLI", "bubblewrap", "database", "redis", "data dir", "model")
    return {name: line for line in output.splitlines() for name in checks if line[5:].startswith(name)}


async def sandbox_works() -> bool:
    return await AgentLauncher(Settings()).check() is None


def test_keys_create_list_revoke_on_the_embedded_database(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path)}
    migrated = cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert str(tmp_path / "claude-agent-api.sqlite3") in migrated.stderr
    created = cli("keys", "create", "--tenant", "acme", "--name", "ci", env=env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"
    assert key.startswith("cak_")

    listed = cli("keys", "list", env=env)
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    key_id, tenant, name, masked, state = line.split("\t")
    assert (tenant, name, state) == ("acme", "ci", "active")
    assert masked.startswith("cak_")
    assert masked.endswith("…")
    assert key not in listed.stdout

    revoked = cli("keys", "revoke", key_id, env=env)
    assert revoked.returncode == 0
    assert "revoked" in cli("keys", "list", env=env).stdout.split("\t")[-1]
    assert cli("keys", "revoke", "no-such-id", env=env).returncode == 1


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "create", "--tenant", "acme"]])
def test_keys_run_from_another_directory_refuse_instead_of_making_a_new_database(
    tmp_path: Path, command: list[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli(*command, env={}, cwd=elsewhere)
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"no database at {elsewhere / 'var' / 'claude-agent-api.sqlite3'}" in done.stderr
    assert f"relative to the current directory {elsewhere}" in done.stderr
    assert "DATA_DIR=/path/to/var" in done.stderr
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not postgres_available(), reason="PostgreSQL is not reachable on loopback")
async def test_migrate_then_keys_on_postgresql(tmp_path: Path) -> None:
    url = await create_postgres_database("caga_cli")
    try:
        env = {"DATABASE_URL": url, "DATA_DIR": str(tmp_path)}
        migrated = cli("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        created = cli("keys", "create", "--tenant", "acme", env=env)
        assert created.returncode == 0, created.stderr
        assert created.stdout.startswith("cak_")
    finally:
        await drop_postgres_database(url)


async def test_serve_scripted_model_prints_a_dev_key_and_runs_agents(tmp_path: Path) -> None:
    server = ApiServer(tmp_path, env={"DATA_DIR": str(tmp_path / "data")}, extra_args=["--scripted-model"])
    async with server:
        log = server.log_text()
        assert f"{server.base_url}/graphql" in log
        key = next(word for word in log.split() if word.startswith("cak_"))
        # The printed way to make another key works as printed, from any directory.
        [printed] = [
            line.split("keys:", 1)[1] for line in log.splitlines() if line.strip().startswith("keys:")
        ]
        assert printed.strip().startswith(f"DATA_DIR={tmp_path / 'data'} ")
        shell = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            printed.replace("NAME", "ops"),
            cwd=tmp_path,
            env=minimal_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        made, errors = await asyncio.wait_for(shell.communicate(), timeout=120)
        assert shell.returncode == 0, errors.decode()
        assert made.decode().startswith("cak_")
        async with GraphQLHttpClient(server.base_url, key) as client:
            started = await start_ok(client, prompt="hello from a real process")
            run = await wait_for_run(client, started["run"]["id"])
        async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as http:
            ready = (await http.get("/readyz")).json()
    assert run["status"] == "COMPLETED"
    assert run["result"]["result"] == "You said: hello from a real process"
    assert ready["ready"] is True
    # A second start finds keys and makes no new one.
    async with ApiServer(tmp_path / "again", env={"DATA_DIR": str(tmp_path / "data")}) as again:
        assert "A development API key was created" not in again.log_text()
    assert (tmp_path / "data" / "claude-agent-api.sqlite3").is_file()


class TestDoctor:
    def test_each_problem_is_one_line_with_its_fix_and_the_exit_code_says_so(self, tmp_path: Path) -> None:
        not_a_dir = tmp_path / "a-file"
        not_a_dir.write_text("")
        empty_path = tmp_path / "bin"
        empty_path.mkdir()
        env = {
            "PATH": str(empty_path),
            "DATA_DIR": str(not_a_dir / "var"),
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{free_port()}",
        }
        done = cli("doctor", env=env)
        lines = lines_by_check(done.stdout)
        assert done.returncode == 1, done.stdout
        assert lines["agent CLI"].startswith("ok   agent CLI")
        assert "claude_agent_sdk/_bundled/claude" in lines["agent CLI"]
        assert lines["bubblewrap"].startswith("FAIL")
        assert "bubblewrap (bwrap) is not installed" in lines["bubblewrap"]
        assert lines["database"].startswith("FAIL")
        assert str(not_a_dir / "var") in lines["database"]
        assert lines["redis"].startswith("FAIL")
        assert "cannot reach redis://127.0.0.1" in lines["redis"]
        assert lines["data dir"].startswith("FAIL")
        assert "cannot be created" in lines["data dir"]
        assert lines["model"].startswith("FAIL")
        assert "cannot reach http://127.0.0.1" in lines["model"]
        assert "no ANTHROPIC_API_KEY" in lines["model"]
        assert done.stdout.count("fix: ") == 5
        assert done.stdout.rstrip().endswith("5 check(s) failed")

    async def test_a_server_ready_to_run_passes(
        self, tmp_path: Path, scripted_model: ScriptedModelServer
    ) -> None:
        if not await sandbox_works():
            pytest.skip("bubblewrap cannot make a sandbox on this machine")
        env = {
            "DATA_DIR": str(tmp_path / "data"),
            "ANTHROPIC_BASE_URL": scripted_model.base_url,
            "ANTHROPIC_API_KEY": "sk-scripted",
        }
        if redis_available():
            env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
        assert (await cli_async("migrate", env=env))[0] == 0
        code, output = await cli_async("doctor", env=env)
        lines = lines_by_check(output)
        assert code == 0, output
        assert lines["database"].startswith("ok")
        assert "claude-agent-api.sqlite3" in lines["database"]
        assert lines["data dir"].startswith(f"ok   data dir    {tmp_path / 'data'} is writable")
        assert (
            lines["model"] == f"ok   model       {scripted_model.base_url} reachable (HTTP 404), key present"
        )
        assert output.rstrip().endswith("all checks passed")

    def test_an_unmigrated_database_and_the_scripted_model(self, tmp_path: Path) -> None:
        (tmp_path / "claude-agent-api.sqlite3").write_bytes(b"")
        done = cli("doctor", "--scripted-model", env={"DATA_DIR": str(tmp_path)})
        lines = lines_by_check(done.stdout)
        assert done.returncode == 1
        assert "is at migration (none); this version needs" in lines["database"]
        assert "migrate" in done.stdout.split(lines["database"])[1].splitlines()[1]
        assert lines["model"].startswith("skip model       --scripted-model")
        assert lines["redis"].startswith("skip")


async def test_scripted_model_command_serves_the_stand_in_alone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "api.cli",
        "scripted-model",
        "--port",
        "0",
        cwd=ROOT,
        env=minimal_env({}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        second = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        base_url = first.rsplit(" ", 1)[1].strip()
        assert first.startswith("scripted model listening on http://127.0.0.1:")
        assert f"ANTHROPIC_BASE_URL={base_url}" in second
        async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=30) as http:
            reply = await http.post(
                "/v1/messages",
                headers={"x-api-key": "scripted-model-key", "anthropic-version": "2023-06-01"},
                json={
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hello, frontend"}],
                },
            )
        assert reply.status_code == 200, reply.text
        assert reply.json()["content"][0]["text"] == "You said: hello, frontend"
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
