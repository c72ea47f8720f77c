"""The SDK's SessionStore on this service's database: agent transcripts for replicas without a shared disk.

One `DatabaseSessionStore` is bound to one of our sessions (tenant id + session id). Every statement it
runs is filtered by that pair, so whatever key the SDK hands it, it can only reach rows its own session
wrote (or that a fork copied to it, see `copy_transcript`). Within that scope the SDK's key
(project_key, session_id, subpath) is kept verbatim, which is what the SDK's conformance suite checks.

Works on PostgreSQL and SQLite alike (the conformance suite runs on both).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from claude_agent_sdk import fold_session_summary
from claude_agent_sdk.types import (
    SessionKey,
    SessionListSubkeysKey,
    SessionStoreEntry,
    SessionStoreListEntry,
    SessionSummaryEntry,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.database import Database
from persistence.models import Transcript, TranscriptEntry

# The main transcript's subpath column value: the SDK never sends an empty subpath (it omits the field).
MAIN = ""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _subpath(key: SessionKey) -> str:
    return key.get("subpath") or MAIN


class DatabaseSessionStore:
    """A `claude_agent_sdk.types.SessionStore` (all optional methods included) scoped to one session.

    The SDK calls `append` with batches of transcript lines (once per turn by default) and `load` when
    it resumes; `delete` removes a transcript (the main key takes its subagents' along).
    """

    def __init__(self, db: Database, *, tenant_id: str, session_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.session_id = session_id

    def _entries_of(self, key: SessionKey | SessionListSubkeysKey) -> sa.ColumnElement[bool]:
        return sa.and_(
            TranscriptEntry.tenant_id == self.tenant_id,
            TranscriptEntry.owner_session_id == self.session_id,
            TranscriptEntry.project_key == key["project_key"],
            TranscriptEntry.transcript_id == key["session_id"],
        )

    def _transcripts_of(self, project_key: str) -> sa.ColumnElement[bool]:
        return sa.and_(
            Transcript.tenant_id == self.tenant_id,
            Transcript.owner_session_id == self.session_id,
            Transcript.project_key == project_key,
        )

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        if not entries:
            return
        subpath = _subpath(key)
        rows = [
            {
                "tenant_id": self.tenant_id,
                "owner_session_id": self.session_id,
                "project_key": key["project_key"],
                "transcript_id": key["session_id"],
                "subpath": subpath,
                "uuid": entry.get("uuid") if isinstance(entry.get("uuid"), str) else None,
                "entry": dict(entry),
            }
            for entry in entries
        ]
        async with self.db.session() as session:
            if subpath == MAIN:
                # Taken first: it serialises appends to one transcript, so the summary fold below
                # reads and writes without losing a concurrent batch.
                previous = await self._lock_transcript(session, key)
            # One cached statement executed for each line in turn (the driver's executemany): ids, the
            # read order, follow the call order; a line whose uuid is already stored (a retried batch)
            # is skipped, not duplicated.
            await session.execute(_insert_ignoring_duplicates(self.db, TranscriptEntry), rows)
            if subpath == MAIN:
                await self._touch_transcript(session, key, previous, entries)
            await session.commit()

    async def _lock_transcript(self, session: AsyncSession, key: SessionKey) -> SessionSummaryEntry | None:
        await session.execute(
            _insert_ignoring_duplicates(self.db, Transcript),
            {
                "owner_session_id": self.session_id,
                "project_key": key["project_key"],
                "transcript_id": key["session_id"],
                "tenant_id": self.tenant_id,
                "mtime_ms": _now_ms(),
                "summary": None,
            },
        )
        row = (
            await session.execute(
                sa.select(Transcript.summary)
                .where(
                    self._transcripts_of(key["project_key"]), Transcript.transcript_id == key["session_id"]
                )
                .with_for_update()
            )
        ).one()
        summary = row.summary
        return summary if isinstance(summary, dict) else None  # type: ignore[return-value]

    async def _touch_transcript(
        self,
        session: AsyncSession,
        key: SessionKey,
        previous: SessionSummaryEntry | None,
        entries: list[SessionStoreEntry],
    ) -> None:
        folded = fold_session_summary(previous, key, entries)
        # Storage write time, the same clock list_sessions reports (the SDK's freshness check).
        mtime = _now_ms()
        folded["mtime"] = mtime
        await session.execute(
            sa.update(Transcript)
            .where(self._transcripts_of(key["project_key"]), Transcript.transcript_id == key["session_id"])
            .values(mtime_ms=mtime, summary=dict(folded))
        )

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        async with self.db.session() as session:
            result = await session.execute(
                sa.select(TranscriptEntry.entry)
                .where(self._entries_of(key), TranscriptEntry.subpath == _subpath(key))
                .order_by(TranscriptEntry.id)
            )
            entries = [entry for (entry,) in result.all()]
        return entries or None

    async def list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        async with self.db.session() as session:
            result = await session.execute(
                sa.select(Transcript.transcript_id, Transcript.mtime_ms).where(
                    self._transcripts_of(project_key)
                )
            )
            return [{"session_id": sid, "mtime": int(mtime)} for sid, mtime in result.all()]

    async def list_session_summaries(self, project_key: str) -> list[SessionSummaryEntry]:
        async with self.db.session() as session:
            result = await session.execute(
                sa.select(Transcript.summary, Transcript.mtime_ms).where(
                    self._transcripts_of(project_key), Transcript.summary.is_not(None)
                )
            )
            summaries: list[SessionSummaryEntry] = []
            for summary, mtime in result.all():
                if isinstance(summary, dict):
                    summaries.append(
                        {"session_id": summary["session_id"], "mtime": int(mtime), "data": summary["data"]}
                    )
            return summaries

    async def delete(self, key: SessionKey) -> None:
        async with self.db.session() as session:
            entries = sa.delete(TranscriptEntry).where(self._entries_of(key))
            if "subpath" in key:
                entries = entries.where(TranscriptEntry.subpath == _subpath(key))
            else:
                await session.execute(
                    sa.delete(Transcript).where(
                        self._transcripts_of(key["project_key"]),
                        Transcript.transcript_id == key["session_id"],
                    )
                )
            await session.execute(entries)
            await session.commit()

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        async with self.db.session() as session:
            result = await session.execute(
                sa.select(TranscriptEntry.subpath)
                .where(self._entries_of(key), TranscriptEntry.subpath != MAIN)
                .distinct()
            )
            return sorted(subpath for (subpath,) in result.all())

    async def latest_project_key(self, transcript_id: str) -> str | None:
        """The project key this session's main transcript `transcript_id` was written under last.

        The SDK's project key is the workspace's path on the replica that ran the CLI, so a replica
        whose DATA_DIR lies elsewhere finds the conversation under another key (the store is one
        session's, so there is no other conversation it could be)."""
        async with self.db.session() as session:
            return (
                await session.execute(
                    sa.select(Transcript.project_key)
                    .where(
                        Transcript.tenant_id == self.tenant_id,
                        Transcript.owner_session_id == self.session_id,
                        Transcript.transcript_id == transcript_id,
                    )
                    .order_by(Transcript.mtime_ms.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()

    async def load_transcript(self, transcript_id: str) -> list[SessionStoreEntry] | None:
        """The main transcript `transcript_id`, under whichever project key wrote it last."""
        project_key = await self.latest_project_key(transcript_id)
        if project_key is None:
            return None
        return await self.load({"project_key": project_key, "session_id": transcript_id})

    async def move_transcript(
        self, transcript_id: str, to_project_key: str
    ) -> list[SessionStoreEntry] | None:
        """The main transcript, moved under `to_project_key` first if it was written under another
        (so what the CLI appends next, mirrored under its own key, extends the whole conversation)."""
        project_key = await self.latest_project_key(transcript_id)
        if project_key is None:
            return None
        entries = await self.load({"project_key": project_key, "session_id": transcript_id})
        if project_key != to_project_key and entries:
            await self.append({"project_key": to_project_key, "session_id": transcript_id}, entries)
            await self.delete({"project_key": project_key, "session_id": transcript_id})
        return entries

    async def delete_transcript(self, transcript_id: str) -> None:
        """Remove a transcript (and its subagents') under every project key."""
        async with self.db.session() as session:
            await session.execute(
                sa.delete(TranscriptEntry).where(
                    TranscriptEntry.tenant_id == self.tenant_id,
                    TranscriptEntry.owner_session_id == self.session_id,
                    TranscriptEntry.transcript_id == transcript_id,
                )
            )
            await session.execute(
                sa.delete(Transcript).where(
                    Transcript.tenant_id == self.tenant_id,
                    Transcript.owner_session_id == self.session_id,
                    Transcript.transcript_id == transcript_id,
                )
            )
            await session.commit()

    async def copy_transcript(
        self, source: DatabaseSessionStore, transcript_id: str, *, to_project_key: str
    ) -> int:
        """Copy `source`'s main transcript `transcript_id` into this store under `to_project_key` (a
        fork gets its parent's conversation this way); returns the number of lines copied. Both stores
        must be the same tenant's."""
        if source.tenant_id != self.tenant_id:
            raise ValueError("a transcript is only ever copied within a tenant")
        entries = await source.load_transcript(transcript_id)
        if entries:
            await self.append({"project_key": to_project_key, "session_id": transcript_id}, entries)
        return len(entries or ())


def _insert_ignoring_duplicates(db: Database, table: type[Any]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on either dialect."""
    insert: Any = postgresql.insert if db.dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


def jsonl(entries: Sequence[Mapping[str, Any]]) -> str:
    """The lines as the CLI's JSONL transcript file holds them."""
    return "".join(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n" for entry in entries)
