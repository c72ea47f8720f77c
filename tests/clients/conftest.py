"""The Node package next to these tests: installed once with `npm ci` and reused while its lockfile holds."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import require_tool

CLIENTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CLIENTS_DIR.parents[1]
WHY = "the client and schema tests drive Node packages (scripts/bootstrap installs npm as root with apt-get)"


@dataclass
class NodeResult:
    returncode: int
    stdout: str
    stderr: str

    def json_line(self) -> dict[str, Any]:
        """The last line of stdout, which the scripts print as JSON."""
        assert self.returncode == 0, f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output; stderr:\n{self.stderr}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result


@dataclass
class NodePackage:
    """tests/clients with its node_modules installed; runs its scripts and its tools' binaries."""

    node: str
    directory: Path

    async def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 240) -> NodeResult:
        """`node ARGS…` (or `node_modules/.bin/NAME ARGS…` when args[0] is a binary of the package)."""
        command = [self.node, *args]
        binary = self.directory / "node_modules" / ".bin" / args[0]
        if binary.exists():
            command = [self.node, str(binary.resolve()), *args[1:]]
        base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=self.directory,
            env={**base, "NO_COLOR": "1", **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            stdout, stderr = await process.communicate()
            raise AssertionError(
                f"{' '.join(args)} still running after {timeout}s\nstdout:\n{stdout.decode()}\n"
                f"stderr:\n{stderr.decode()}"
            ) from None
        assert process.returncode is not None
        return NodeResult(process.returncode, stdout.decode(), stderr.decode())


async def install(npm: str, directory: Path) -> None:
    """`npm ci` unless node_modules was installed from this very lockfile."""
    lockfile = directory / "package-lock.json"
    digest = hashlib.sha256(lockfile.read_bytes()).hexdigest()
    stamp = directory / "node_modules" / ".installed-from"
    if stamp.exists() and stamp.read_text() == digest:
        return
    process = await asyncio.create_subprocess_exec(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        "--ignore-scripts",
        "--loglevel=error",
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    assert process.returncode == 0, f"npm ci in {directory} failed:\n{output.decode()}"
    stamp.write_text(digest)


@pytest.fixture(scope="session")
async def node_package() -> NodePackage:
    node = require_tool("node", "nodejs", why=WHY)
    npm = require_tool("npm", why=WHY)
    await install(npm, CLIENTS_DIR)
    assert shutil.which(node)
    return NodePackage(node=node, directory=CLIENTS_DIR)
