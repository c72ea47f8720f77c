"""Lease manipulation for tests: what another replica taking a session over looks like in the database."""

from __future__ import annotations

import sqlalchemy as sa

from persistence.database import Database
from persistence.models import AgentSession
from persistence.repositories.leases import LeaseRepository


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
