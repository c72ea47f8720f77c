"""Another git revision's server beside this tree's, for side-by-side comparisons (`--compare REF`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def checkout(ref: str) -> AsyncIterator[Path]:
    """`ref` in a temporary detached git worktree, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="caga-baseline-")) / "tree"
    git = ["git", "-C", str(ROOT), "worktree"]
    await asyncio.to_thread(subprocess.run, [*git, "add", "--detach", str(path), ref], check=True)
    try:
        yield path
    finally:
        await asyncio.to_thread(subprocess.run, [*git, "remove", "--force", str(path)], check=False)


def server_command(source: Path) -> list[str]:
    """The `python -m api.cli` prefix for the server of the checkout at `source`, on this tree's
    virtualenv (`python -m` would put the working directory, this tree, first on the path)."""
    bootstrap = (
        f"import sys, runpy; sys.path.insert(0, {str(source)!r}); "
        "runpy.run_module('api.cli', run_name='__main__')"
    )
    return [sys.executable, "-c", bootstrap]
