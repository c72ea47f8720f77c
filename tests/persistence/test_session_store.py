"""The database SessionStore: the SDK's own conformance suite, on PostgreSQL and on SQLite, and the
scoping that keeps one session's transcript out of another's reach."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from claude_agent_sdk.testing import run_session_store_conformance
from claude_agent_sdk.types import SessionKey, SessionStoreEntry

from persistence.database import Database
from persistence.models import utcnow
from persistence.repositories.sessions import SessionRepository
from persistence.repositories.tenants import TenantRepository
from persistence.session_store import DatabaseSessionStore


async def _session(db: Database, tenant: str | None = None) -> tuple[str, str]:
    session_id = str(uuid.uuid4())
    async with db.session() as session:
        row = await TenantRepository(session).get_or_create(tenant or f"t-{session_id}")
        await SessionRepository(session).create(
            session_id=session_id, tenant_id=row.id, title=None, at=utcnow()
        )
        await session.commit()
    return row.id, session_id


def _lines(*entries: dict[str, Any]) -> list[SessionStoreEntry]:
    return cast(list[SessionStoreEntry], list(entries))


async def _store(db: Database, tenant: str | None = None) -> DatabaseSessionStore:
    tenant_id, session_id = await _session(db, tenant)
    return DatabaseSessionStore(db, tenant_id=tenant_id, session_id=session_id)


async def test_the_sdk_conformance_suite_passes_with_every_optional_method(db: Database) -> None:
    made: list[DatabaseSessionStore] = []

    async def make() -> DatabaseSessionStore:
        store = await _store(db)
        made.append(store)
        return store

    await run_session_store_conformance(make)
    # Every contract ran, the optional ones too: one fresh store each, plus the probe.
    assert len(made) == 15


async def test_a_session_never_reads_another_sessions_transcript(db: Database) -> None:
    mine = await _store(db, "tenant-a")
    neighbour = await _store(db, "tenant-a")
    key: SessionKey = {"project_key": "p", "session_id": "s"}
    await mine.append(key, _lines({"type": "user", "uuid": "u1", "secret": "mine"}))

    assert await neighbour.load(key) is None
    assert await neighbour.list_sessions("p") == []
    assert await neighbour.list_session_summaries("p") == []
    assert await neighbour.list_subkeys(key) == []
    await neighbour.delete(key)
    assert await mine.load(key) == [{"type": "user", "uuid": "u1", "secret": "mine"}]
    # The tenant is part of the scope too: the right session id under the wrong tenant finds nothing.
    stranger = await _store(db, "tenant-b")
    wrong_tenant = DatabaseSessionStore(db, tenant_id=stranger.tenant_id, session_id=mine.session_id)
    assert await wrong_tenant.load(key) is None


async def test_a_retried_batch_is_not_stored_twice(db: Database) -> None:
    store = await _store(db)
    key: SessionKey = {"project_key": "p", "session_id": "s"}
    batch = _lines(
        {"type": "user", "uuid": "u1"}, {"type": "title", "t": 1}, {"type": "assistant", "uuid": "u2"}
    )
    await store.append(key, batch)
    await store.append(key, batch[:1] + batch[2:])
    assert await store.load(key) == batch


async def test_deleting_the_session_removes_its_transcript(db: Database) -> None:
    store = await _store(db)
    key: SessionKey = {"project_key": "p", "session_id": "s"}
    await store.append(key, _lines({"type": "user", "uuid": "u1"}))
    await store.append({**key, "subpath": "subagents/a"}, _lines({"type": "user"}))
    async with db.session() as session:
        assert await SessionRepository(session).delete(store.session_id)
        await session.commit()
    assert await store.load(key) is None
    assert await store.list_sessions("p") == []
    assert await store.list_subkeys(key) == []


async def test_a_transcript_written_under_another_project_key_is_moved_to_this_one(db: Database) -> None:
    # Replicas whose DATA_DIR paths differ write one session's transcript under different project keys.
    store = await _store(db)
    there: SessionKey = {"project_key": "replica-a-path", "session_id": "s"}
    here: SessionKey = {"project_key": "replica-b-path", "session_id": "s"}
    await store.append(there, _lines({"type": "user", "uuid": "u1"}, {"type": "assistant", "uuid": "a1"}))
    assert await store.load_transcript("s") == _lines(
        {"type": "user", "uuid": "u1"}, {"type": "assistant", "uuid": "a1"}
    )

    moved = await store.move_transcript("s", "replica-b-path")
    assert moved == _lines({"type": "user", "uuid": "u1"}, {"type": "assistant", "uuid": "a1"})
    assert await store.load(there) is None
    await store.append(here, _lines({"type": "user", "uuid": "u2"}))
    assert [entry["uuid"] for entry in await store.load_transcript("s") or []] == ["u1", "a1", "u2"]
    assert await store.move_transcript("nothing", "replica-b-path") is None


async def test_a_fork_copies_its_parents_transcript_within_the_tenant_only(db: Database) -> None:
    parent = await _store(db, "tenant-a")
    child = await _store(db, "tenant-a")
    await parent.append({"project_key": "p", "session_id": "parent"}, _lines({"type": "user", "uuid": "u1"}))
    assert await child.copy_transcript(parent, "parent", to_project_key="c") == 1
    assert await child.load({"project_key": "c", "session_id": "parent"}) == _lines(
        {"type": "user", "uuid": "u1"}
    )
    await child.delete_transcript("parent")
    assert await child.load_transcript("parent") is None
    assert await parent.load_transcript("parent") is not None
    stranger = await _store(db, "tenant-b")
    with pytest.raises(ValueError, match="within a tenant"):
        await stranger.copy_transcript(parent, "parent", to_project_key="x")
