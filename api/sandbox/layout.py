"""Where a session's files live under DATA_DIR: one folder per tenant, one per session inside it.

    DATA_DIR/tenants/<tenant id>/sessions/<session id>/workspace   the agent's working directory
    DATA_DIR/tenants/<tenant id>/sessions/<session id>/agent       CLAUDE_CONFIG_DIR: transcript, checkpoints

A sandbox binds exactly these two folders, so an agent sees its own session and nothing beside it; the
database, the server's other files and every other session stay outside its view. Paths are the same
inside the sandbox and out, so the CLI's project key (derived from cwd) and the transcript the server
looks for to decide on resume agree on every replica sharing DATA_DIR.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Ids are uuids chosen by the server; anything else must never become a path component.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class SessionPaths:
    root: Path

    @classmethod
    def of(cls, data_dir: Path, tenant_id: str, session_id: str) -> SessionPaths:
        for value in (tenant_id, session_id):
            if not _SAFE_ID.match(value):
                raise ValueError(f"not a safe id for a path: {value!r}")
        return cls(data_dir.resolve() / "tenants" / tenant_id / "sessions" / session_id)

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def agent_dir(self) -> Path:
        """CLAUDE_CONFIG_DIR of this session's CLI: its transcript and file checkpoints, nobody else's."""
        return self.root / "agent"

    def ensure(self) -> SessionPaths:
        # 0o700: on a shared volume, other local users have no business in an agent's files either.
        for path in (self.root, self.workspace, self.agent_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


def copy_tree(source: Path, target: Path) -> None:
    """Copy a folder an agent wrote: symlinks as links (never followed), regular files with their
    metadata, and nothing else (a FIFO would block the copy forever; devices and sockets mean nothing
    in another session)."""

    def copy_regular(src: str, dst: str) -> str:
        if stat.S_ISREG(os.lstat(src).st_mode):
            return str(shutil.copy2(src, dst))
        return dst

    shutil.copytree(source, target, symlinks=True, copy_function=copy_regular, dirs_exist_ok=True)


def remove_tree(root: Path) -> bool:
    """Remove a folder an agent wrote, also where it took its own permissions away (chmod 000);
    True when nothing of it is left."""

    def allow_and_retry(function: Callable[..., object], path: str, _exc: object) -> None:
        for folder in {os.path.dirname(path), path}:
            with contextlib.suppress(OSError):
                if not os.path.islink(folder):
                    os.chmod(folder, 0o700)
        with contextlib.suppress(FileNotFoundError):
            function(path)

    for _ in range(3):
        if not root.exists() and not root.is_symlink():
            return True
        with contextlib.suppress(OSError):
            shutil.rmtree(root, onerror=allow_and_retry)
    return not root.exists()
