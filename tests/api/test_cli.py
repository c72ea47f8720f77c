"""The console script as an operator uses it: keys, migrate, and serve on the embedded default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.documents import start_ok, wait_for_run
from tests.support.graphql_http import GraphQLHttpClient
from tests.support.servers import (
    ApiServer,
    create_postgres_database,
    drop_postgres_database,
    minimal_env,
    postgres_available,
)

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=minimal_env(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_create_list_revoke_on_the_embedded_database(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path)}
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
