"""SESSION_STORE=database: agent transcripts kept in the database, so a session resumes on any replica.

The CLI still writes its transcript to the session's agent dir (its CLAUDE_CONFIG_DIR); the SDK mirrors
every line to the session's `DatabaseSessionStore` (sdk_adapter.MirrorOnly). Before a connection that
resumes, `restore_transcript` puts the store's copy back into that agent dir when this replica's file is
missing or shorter (the session last ran elsewhere), and the CLI resumes from it as it always does.

What stays on the replica's disk: the session's workspace, and the subagents' transcripts (the main
transcript is what a resume needs).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from api.runtime.sdk_adapter import transcript_path
from api.settings import Settings
from persistence.database import Database
from persistence.session_store import DatabaseSessionStore, jsonl


def session_store_for(
    settings: Settings, db: Database, tenant_id: str, session_id: str
) -> DatabaseSessionStore | None:
    """The session's transcript store when SESSION_STORE=database, else None (files only)."""
    if settings.session_store != "database":
        return None
    return DatabaseSessionStore(db, tenant_id=tenant_id, session_id=session_id)


def _project_key(config_dir: str, cwd: str, transcript_id: str) -> str:
    return transcript_path(config_dir, cwd, transcript_id).parent.name


async def restore_transcript(
    store: DatabaseSessionStore, config_dir: str, cwd: str, transcript_id: str
) -> bool:
    """Write the store's copy of a transcript where the CLI looks for it, unless the file there already
    holds as many lines (it is this replica's own, and at least as new). True when it was written.

    The copy is the one written last, whatever the workspace's path was on the replica that wrote it;
    it is moved under this replica's project key, where the CLI's next lines are mirrored."""
    path = transcript_path(config_dir, cwd, transcript_id)
    entries = await store.move_transcript(transcript_id, path.parent.name)
    if not entries:
        return False
    return await asyncio.to_thread(_write_if_longer, path, jsonl(entries), len(entries))


async def copy_for_fork(
    parent: DatabaseSessionStore, child: DatabaseSessionStore, child_dirs: tuple[str, str], parent_id: str
) -> int:
    """The parent's transcript into the fork's store, under the project key of the fork's workspace
    (where the fork's first CLI looks for it, as with files). `child_dirs` is (agent dir, workspace)."""
    project_key = _project_key(*child_dirs, parent_id)
    return await child.copy_transcript(parent, parent_id, to_project_key=project_key)


def _line_count(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for line in file if line.strip())
    except FileNotFoundError:
        return 0


def _write_if_longer(path: Path, text: str, lines: int) -> bool:
    if _line_count(path) >= lines:
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written beside and renamed: a CLI never reads half a transcript.
    partial = path.with_name(f".{path.name}.restoring")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(0o600)
    os.replace(partial, path)
    return True
