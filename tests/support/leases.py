"""Lease manipulation for tests: what another replica taking a session over looks like in the database."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from api.auth import create_key
from persistence.database import Database
from persistence.models import AgentSession, Run, utcnow
from persistence.repositories.leases import LeaseRepository
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository


async def queued_run(db: Database, tenant_prefix: str = "fence") -> Run:
    """A QUEUED run of a new session of a new tenant, written straight to the database."""
    key = await create_key(db, tenant_name=f"{tenant_prefix}-{uuid.uuid4().hex[:6]}", name=None)
    async with db.session() as session:
        row = await SessionRepository(session).create(
            session_id=str(uuid.uuid4()), tenant_id=key.tenant_id, title="t", at=utcnow()
        )
        run = await RunRepository(session).create(
            run_id=str(uuid.uuid4()),
            session_id=row.id,
            tenant_id=key.tenant_id,
            prompt="p",
            prompt_uuid=str(uuid.uuid4()),
            options={},
            api_key_id=key.key_id,
            at=utcnow(),
        )
        await session.commit()
    return run


async def take_over(db: Database, session_id: str, owner: str = "another-replica", ttl: float = 60) -> int:
    """Another replica takes the session's lease now, whoever held it (as after the holder's lease
    lapsed): a new token, as a real claim would give. Returns that token."""
    async with db.session() as session:
        await session.execute(
            sa.update(AgentSession)
            .where(AgentSession.id == session_id)
            .values(lease_owner=None, lease_expires_at=None)
        )
        token = await LeaseRepository(session).claim(session_id, owner, ttl_seconds=ttl)
        await session.commit()
    assert token is not None
    return token
