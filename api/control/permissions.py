"""Deciding permission requests from any replica: the row first (with audit), then the owner is told."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from api import audit
from api.auth import Principal
from api.control.commands import DecidePermission
from api.control.router import CommandRouter
from api.errors import NotFound, PermissionAlreadyDecided, ValidationFailed
from api.events.log import EventLog
from api.runtime.lifecycle import TERMINAL
from api.runtime.permissions import settle, settle_in
from persistence.models import PermissionRequest, utcnow
from persistence.repositories.permissions import PENDING, Decision, PermissionRepository
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

ASK_USER_QUESTION = "AskUserQuestion"
MAX_MESSAGE_CHARS = 10_000
MAX_INPUT_BYTES = 1024 * 1024
STATUSES = ("PENDING", "ALLOWED", "DENIED", "EXPIRED", "CANCELLED")


@dataclass(frozen=True)
class PermissionChoice:
    """A decidePermission input in plain values."""

    request_id: str
    allow: bool
    message: str | None = None
    updated_input: Any = None
    allow_for_session: bool = False


def _check(choice: PermissionChoice) -> None:
    if choice.message is not None and len(choice.message) > MAX_MESSAGE_CHARS:
        raise ValidationFailed(f"message is longer than {MAX_MESSAGE_CHARS} characters", field="message")
    if choice.updated_input is not None:
        if not choice.allow:
            raise ValidationFailed("updatedInput only goes with ALLOW", field="updatedInput")
        if not isinstance(choice.updated_input, dict):
            raise ValidationFailed(
                "updatedInput must be a JSON object (the tool's input)", field="updatedInput"
            )
        if len(orjson.dumps(choice.updated_input)) > MAX_INPUT_BYTES:
            raise ValidationFailed("updatedInput is too large", field="updatedInput")
    if choice.allow_for_session and not choice.allow:
        raise ValidationFailed("allowForSession only goes with ALLOW", field="allowForSession")


class PermissionControl:
    def __init__(self, event_log: EventLog, router: CommandRouter) -> None:
        self.event_log = event_log
        self.db = event_log.db
        self.router = router

    async def decide(self, principal: Principal, choice: PermissionChoice) -> PermissionRequest:
        _check(choice)
        now = utcnow()
        async with self.db.session() as session:
            repository = PermissionRepository(session)
            row = await repository.get(choice.request_id, tenant_id=principal.tenant_id)
            if row is None:
                raise NotFound("PermissionRequest", choice.request_id)
            if row.status != PENDING:
                raise PermissionAlreadyDecided(row.id, row.status)
            run = await RunRepository(session).get(row.run_id) if row.run_id else None
            expires_at = row.expires_at
        # Its replica may be gone and unable to settle it: a request whose run is over, or whose
        # deadline has passed, is never allowed.
        if run is not None and run.status in TERMINAL:
            await settle(self.event_log, [row.id], "CANCELLED", f"the run ended: {run.status}")
            raise PermissionAlreadyDecided(row.id, "CANCELLED")
        if expires_at is not None and expires_at <= now:
            await settle(self.event_log, [row.id], "EXPIRED", "nobody answered in time")
            raise PermissionAlreadyDecided(row.id, "EXPIRED")
        decision = Decision(
            status="ALLOWED" if choice.allow else "DENIED",
            decided_by=principal.actor,
            at=now,
            message=choice.message,
            updated_input=choice.updated_input,
            allow_for_session=choice.allow_for_session,
        )
        async with self.db.session() as session:
            decided, records = await settle_in(session, self.event_log, choice.request_id, decision)
            assert decided is not None
            if not records:
                await session.rollback()
                raise PermissionAlreadyDecided(decided.id, decided.status)
            await audit.record(
                session,
                actor=principal,
                action="permission.decide",
                target_type="PermissionRequest",
                target_id=decided.id,
                details={
                    "decision": "ALLOW" if choice.allow else "DENY",
                    "sessionId": decided.session_id,
                    "runId": decided.run_id,
                    "toolName": decided.tool_name,
                    "inputChanged": choice.updated_input is not None,
                    "allowForSession": choice.allow_for_session,
                },
            )
            # Read back before the commit, so the commit is the last statement (lifecycle.finish says why).
            decided = await PermissionRepository(session).get(decided.id)
            await session.commit()
        assert decided is not None
        await self.event_log.publish(records)
        await self.router.send(DecidePermission(session_id=decided.session_id, request_id=decided.id))
        return decided

    async def answer_question(self, principal: Principal, request_id: str, answers: Any) -> PermissionRequest:
        """Allow an AskUserQuestion call with the answers added to its input (question text → answer)."""
        if not isinstance(answers, dict) or not all(isinstance(key, str) for key in answers):
            raise ValidationFailed("answers must be a JSON object: question text → answer", field="answers")
        async with self.db.session() as session:
            row = await PermissionRepository(session).get(request_id, tenant_id=principal.tenant_id)
        if row is None:
            raise NotFound("PermissionRequest", request_id)
        if row.tool_name != ASK_USER_QUESTION:
            raise ValidationFailed(
                f"request {request_id!r} is for {row.tool_name}, not a question; use decidePermission",
                field="requestId",
            )
        choice = PermissionChoice(request_id, allow=True, updated_input={**row.input, "answers": answers})
        return await self.decide(principal, choice)

    async def list(
        self, principal: Principal, *, session_id: str | None, status: str | None
    ) -> Sequence[PermissionRequest]:
        async with self.db.session() as session:
            sessions = SessionRepository(session)
            if (
                session_id is not None
                and await sessions.get(session_id, tenant_id=principal.tenant_id) is None
            ):
                return []
            return await PermissionRepository(session).list(
                tenant_id=principal.tenant_id, session_id=session_id, status=status
            )
