"""schemathesis in GraphQL mode against a running server: no HTTP 5xx, no masked "Unexpected error.".

The server is the embedded default with the scripted model, as `claude-agent-api serve --scripted-model`
runs it. schemathesis fuzzes every Query and Mutation root field over HTTP (it does not do subscriptions)
with a time budget, so the test takes about a minute whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import cluster
from tests.support.servers import REPO_ROOT, minimal_env

pytestmark = pytest.mark.timeout(240)

FUZZ_SECONDS = 45
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (dev extras)")
async def test_fuzzing_the_graphql_api_finds_no_server_error_and_no_masked_error(tmp_path: Path) -> None:
    # One run at a time: fuzzed startRun calls queue up rather than start many agent CLIs at once.
    async with cluster(tmp_path, embedded=True, env={"MAX_CONCURRENT_RUNS": "1"}) as c:
        replica = c.replicas[0]
        env = minimal_env(
            {"SCHEMATHESIS_HOOKS": "tests.graphql.schemathesis_hooks", "PYTHONPATH": str(REPO_ROOT)}
        )
        args = [
            str(SCHEMATHESIS), "run", f"{replica.base_url}/graphql",
            "--max-time", str(FUZZ_SECONDS),
            "--checks", "no_http_5xx,no_masked_errors",
            "--header", f"Authorization: Bearer {c.key}",
            "--seed", "1",
            "--workers", "2",
            "--no-color",
        ]  # fmt: skip
        done = await run_schemathesis(args, env, tmp_path)
        server_log = replica.log_text()
    output = done.stdout
    print(output[-3000:])
    assert done.returncode == 0, output[-6000:]
    cases = sum(int(n) for n in re.findall(r"(\d+) generated", output))
    assert cases >= 100, f"too few cases to mean anything: {cases}\n{output[-3000:]}"
    # The server's own view: no request ended in an unhandled exception.
    assert "Traceback" not in server_log, server_log[-3000:]


async def run_schemathesis(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        args,
        env=env,
        # Its example database and caches go there, not into the repository.
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 90,
        check=False,
    )
