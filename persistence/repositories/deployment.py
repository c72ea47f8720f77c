"""The deployment's id: read from its one row, which the first replica to ask writes."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from persistence.models import Deployment, utcnow

_READ = sa.select(Deployment.id).where(Deployment.singleton == 1)


async def deployment_id(session: AsyncSession) -> str:
    """This deployment's id, the same for every replica on this database; commits when it writes it."""
    known = await session.scalar(_READ)
    if known is not None:
        return known
    try:
        await session.execute(
            sa.insert(Deployment).values(singleton=1, id=uuid.uuid4().hex, created_at=utcnow())
        )
        await session.commit()
    except IntegrityError:
        # Another replica wrote it first: take theirs.
        await session.rollback()
    written = await session.scalar(_READ)
    if written is None:
        raise RuntimeError("the deployment row vanished while it was read")
    return written
