"""Live controls of a session's running agent: model and permission mode, within the server's policy."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api import audit
from api.auth import Principal
from api.control.commands import GetContextUsage, SetModel, SetPermissionMode
from api.control.router import CommandRouter
from api.errors import NotFound, SessionNotLive, ValidationFailed
from api.runtime.policy import check_model, check_permission_mode
from api.runtime.tool_policy import PolicyBook
from api.settings import Settings
from persistence.database import Database
from persistence.models import AgentSession
from persistence.repositories.leases import LeaseRepository
from persistence.repositories.sessions import SessionRepository

# How long a read of the live agent waits for the replica running it.
LIVE_READ_TIMEOUT_SECONDS = 10.0


async def agent_is_live(session: AsyncSession, session_id: str) -> bool:
    """Some replica holds the session's lease, by the database's clock: its agent runs there (busy or
    idle)."""
    return await LeaseRepository(session).is_live(session_id)


def _reply_channel() -> str:
    return f"reply:{uuid.uuid4()}"


class LiveControl:
    def __init__(self, settings: Settings, db: Database, router: CommandRouter) -> None:
        self.settings = settings
        self.db = db
        self.router = router
        self.policy = PolicyBook.from_settings(settings)

    async def set_model(self, principal: Principal, session_id: str, model: str | None) -> AgentSession:
        if model is not None:
            check_model(model)
        command = SetModel(session_id, model, reply_to=_reply_channel())
        return await self._send(principal, session_id, command, "session.set_model", {"model": model})

    async def set_permission_mode(self, principal: Principal, session_id: str, mode: str) -> AgentSession:
        # The same rules as startRun's: a live change cannot reach a mode the tenant could not start with.
        sdk_mode = check_permission_mode(mode, self.policy.for_tenant(principal.tenant_name))
        return await self._send(
            principal,
            session_id,
            SetPermissionMode(session_id, sdk_mode, reply_to=_reply_channel()),
            "session.set_permission_mode",
            {"mode": mode},
        )

    async def _send(
        self,
        principal: Principal,
        session_id: str,
        command: SetModel | SetPermissionMode,
        action: str,
        details: dict[str, object],
    ) -> AgentSession:
        """Audit, then hand the command to the replica whose agent runs the session and wait for what
        its CLI said: a change the CLI refused (an unknown model) is the caller's ValidationFailed.

        These changes live in the agent process only (the next run's own options start a new one when
        they differ), so there is no row to poll: a session without a live agent is refused."""
        async with self.db.session() as session:
            row = await SessionRepository(session).get(session_id, tenant_id=principal.tenant_id)
            if row is None:
                raise NotFound("Session", session_id)
            if not await agent_is_live(session, session_id):
                raise SessionNotLive(session_id)
            await audit.record(
                session,
                actor=principal,
                action=action,
                target_type="Session",
                target_id=session_id,
                details=dict(details),
            )
            await session.commit()
        answer = await self.router.ask(command, timeout=LIVE_READ_TIMEOUT_SECONDS)
        if answer is None:
            raise SessionNotLive(session_id, f"the agent of session {session_id!r} did not answer in time")
        if not answer.get("live", True):
            raise SessionNotLive(session_id)
        if not answer.get("applied"):
            field = "model" if isinstance(command, SetModel) else "mode"
            raise ValidationFailed(f"the agent refused the change: {answer.get('error')}", field=field)
        return row

    async def context_usage(self, principal: Principal, session_id: str) -> dict[str, Any] | None:
        """The live agent's context window usage, from whichever replica runs it; None when the session
        is not the caller's, has no live agent, or its replica did not answer in time."""
        async with self.db.session() as session:
            row = await SessionRepository(session).get(session_id, tenant_id=principal.tenant_id)
            live = row is not None and await agent_is_live(session, session_id)
        if not live:
            return None
        command = GetContextUsage(session_id, reply_to=_reply_channel())
        return await self.router.ask(command, timeout=LIVE_READ_TIMEOUT_SECONDS)
