"""A session's own lifecycle: its title, tags, archive flag, and deleting it with everything it owns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import structlog

from api import audit
from api.auth import Principal
from api.control.commands import CloseSession
from api.control.live import agent_is_live
from api.control.router import CommandRouter
from api.errors import NotFound, SessionBusy, ValidationFailed
from api.events.log import EventLog
from api.sandbox.layout import SessionPaths, remove_tree
from api.settings import Settings
from persistence.models import AgentSession, utcnow
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

log = structlog.get_logger(__name__)

MAX_TITLE_CHARS = 500
MAX_TAGS = 20
MAX_TAG_CHARS = 64
# How long deleteSession waits for the replica running the session's idle agent to stop it.
CLOSE_TIMEOUT_SECONDS = 30.0


def snapshot(row: AgentSession) -> dict[str, Any]:
    """A session as it was, for a DELETED change (the row itself is gone by then)."""
    return {
        "id": row.id,
        "tenant_id": row.tenant_id,
        "title": row.title,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "last_seq": row.last_seq,
        "total_cost_usd": row.total_cost_usd,
        "tags": list(row.tags or []),
        "archived_at": row.archived_at.isoformat() if row.archived_at else None,
        "forked_from_id": row.forked_from_id,
    }


def check_title(title: str) -> str:
    title = title.strip()
    if not title:
        raise ValidationFailed("title must not be empty", field="title")
    if len(title) > MAX_TITLE_CHARS:
        raise ValidationFailed(f"title is longer than {MAX_TITLE_CHARS} characters", field="title")
    return title


def check_tags(tags: Sequence[str]) -> list[str]:
    """Trimmed, duplicates dropped, order kept."""
    clean: list[str] = []
    for tag in tags:
        value = tag.strip()
        if not value or len(value) > MAX_TAG_CHARS:
            raise ValidationFailed(f"each tag must have 1 to {MAX_TAG_CHARS} characters", field="tags")
        if value not in clean:
            clean.append(value)
    if len(clean) > MAX_TAGS:
        raise ValidationFailed(f"at most {MAX_TAGS} tags", field="tags")
    return clean


class SessionControl:
    def __init__(self, settings: Settings, event_log: EventLog, router: CommandRouter) -> None:
        self.settings = settings
        self.event_log = event_log
        self.db = event_log.db
        self.router = router

    async def rename(self, principal: Principal, session_id: str, title: str) -> AgentSession:
        title = check_title(title)
        return await self._update(principal, session_id, "session.rename", {"title": title}, title=title)

    async def set_tags(self, principal: Principal, session_id: str, tags: Sequence[str]) -> AgentSession:
        clean = check_tags(tags)
        return await self._update(principal, session_id, "session.set_tags", {"tags": clean}, tags=clean)

    async def set_archived(self, principal: Principal, session_id: str, archived: bool) -> AgentSession:
        action = "session.archive" if archived else "session.unarchive"
        return await self._update(
            principal, session_id, action, {}, archived_at=utcnow() if archived else None
        )

    async def _update(
        self, principal: Principal, session_id: str, action: str, details: dict[str, Any], **values: object
    ) -> AgentSession:
        async with self.db.session() as session:
            sessions = SessionRepository(session)
            if await sessions.get(session_id, tenant_id=principal.tenant_id) is None:
                raise NotFound("Session", session_id)
            await sessions.update(session_id, utcnow(), **values)
            await audit.record(
                session,
                actor=principal,
                action=action,
                target_type="Session",
                target_id=session_id,
                details=details,
            )
            # Read back before the commit, so the commit is the last statement (lifecycle.finish says why).
            row = await sessions.get(session_id)
            await session.commit()
        assert row is not None
        await self.event_log.publish_session_change(principal.tenant_id, session_id, "UPDATED")
        return row

    async def delete(self, principal: Principal, session_id: str) -> AgentSession:
        """Remove the session: its rows (events, runs, permission requests cascade) and its folder
        DATA_DIR/tenants/<t>/sessions/<s> (workspace, transcript, file checkpoints). Refused while a run
        is active; an idle agent is stopped first, by the replica running it."""
        async with self.db.session() as session:
            row = await SessionRepository(session).get(session_id, tenant_id=principal.tenant_id)
            if row is None:
                raise NotFound("Session", session_id)
            active = await RunRepository(session).active_for_session(session_id)
            live = await agent_is_live(session, session_id)
        if active:
            raise SessionBusy(session_id, active[0].id)
        if live:
            answer = await self.router.ask(
                CloseSession(session_id, reply_to=f"reply:{uuid.uuid4()}"), timeout=CLOSE_TIMEOUT_SECONDS
            )
            if answer is not None and answer.get("busy"):
                raise SessionBusy(session_id, None)
        async with self.db.session() as session:
            sessions = SessionRepository(session)
            row = await sessions.get(session_id, tenant_id=principal.tenant_id)
            if row is None:
                raise NotFound("Session", session_id)
            active = await RunRepository(session).active_for_session(session_id)
            if active:
                raise SessionBusy(session_id, active[0].id)
            if await agent_is_live(session, session_id):
                # Its replica did not stop the agent in time: the folder must not vanish under it.
                raise SessionBusy(session_id, None)
            gone = snapshot(row)
            await sessions.delete(session_id)
            await audit.record(
                session,
                actor=principal,
                action="session.delete",
                target_type="Session",
                target_id=session_id,
                details={"title": row.title, "lastSeq": row.last_seq, "totalCostUsd": row.total_cost_usd},
            )
            await session.commit()
        folder = SessionPaths.of(self.settings.data_dir, principal.tenant_id, session_id).root
        if not await asyncio.to_thread(remove_tree, folder):
            log.error("session.folder_left", session_id=session_id, folder=str(folder))
        await self.event_log.publish_session_change(principal.tenant_id, session_id, "DELETED", snapshot=gone)
        return row
