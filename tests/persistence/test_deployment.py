"""The deployment's id: one per database, the same for every replica, whoever asks first."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from persistence.database import Database
from persistence.models import Deployment
from persistence.repositories.deployment import deployment_id


async def _read(db: Database) -> str:
    async with db.session() as session:
        return await deployment_id(session)


async def test_replicas_starting_at_once_agree_on_one_id(db: Database) -> None:
    ids = await asyncio.gather(*(_read(db) for _ in range(4)))
    assert len(set(ids)) == 1
    assert await _read(db) == ids[0]
    async with db.session() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Deployment)) == 1


async def test_a_lost_row_is_written_again(db: Database) -> None:
    first = await _read(db)
    async with db.session() as session:
        await session.execute(sa.delete(Deployment))
        await session.commit()
    again = await _read(db)
    assert again != first
    assert await _read(db) == again
