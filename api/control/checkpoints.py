"""Rewinding a session's files to a checkpoint, and forking a session: validated and audited here, the
rewind itself done by the session's actor on whichever replica runs (or now takes) the session."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass

import structlog

from api import audit
from api.auth import Principal
from api.control.commands import RewindFiles
from api.control.live import agent_is_live
from api.control.router import CommandRouter
from api.control.sessions import check_title
from api.errors import CheckpointUnavailable, NotFound, PolicyViolation, SessionBusy, ValidationFailed
from api.events.log import EventLog
from api.runtime.run_manager import RunManager
from api.runtime.sdk_adapter import transcript_message, transcript_path
from api.runtime.transcript_store import copy_for_fork, restore_transcript, session_store_for
from api.sandbox.layout import SessionPaths, copy_tree, remove_tree
from api.settings import Settings
from persistence.models import AgentSession, utcnow
from persistence.repositories.runs import RunRepository
from persistence.repositories.sessions import SessionRepository

log = structlog.get_logger(__name__)

# What rewindFiles answers when transcripts go to the database: the SDK keeps file checkpoints only
# beside a transcript on local disk, and refuses them together with a session store.
REWIND_NEEDS_FILES = (
    "rewindFiles needs SESSION_STORE=files: with SESSION_STORE=database the agent keeps no file "
    "checkpoints (the SDK refuses file checkpointing together with a session store)"
)

# A rewind may have to start the session's agent first (a second or more on a loaded machine).
REWIND_TIMEOUT_SECONDS = 60.0
FORK_SUFFIX = " (fork)"


@dataclass(frozen=True)
class RewindOutcome:
    files_changed: list[str]
    insertions: int
    deletions: int
    applied: bool


class CheckpointControl:
    def __init__(
        self, settings: Settings, event_log: EventLog, manager: RunManager, router: CommandRouter
    ) -> None:
        self.settings = settings
        self.event_log = event_log
        self.db = event_log.db
        self.manager = manager
        self.router = router

    async def rewind(
        self, principal: Principal, session_id: str, checkpoint_id: str, *, dry_run: bool, conversation: bool
    ) -> RewindOutcome:
        async with self.db.session() as session:
            row = await SessionRepository(session).get(session_id, tenant_id=principal.tenant_id)
            if row is None:
                raise NotFound("Session", session_id)
            if self.settings.session_store != "files":
                raise PolicyViolation(REWIND_NEEDS_FILES, rule="session_store")
            runs = RunRepository(session)
            run = await runs.by_checkpoint(session_id, checkpoint_id)
            if run is None or run.started_at is None:
                raise NotFound("Checkpoint", checkpoint_id)
            active = await runs.active_for_session(session_id)
            if active:
                raise SessionBusy(session_id, active[0].id)
            if not dry_run:
                await audit.record(
                    session,
                    actor=principal,
                    action="session.rewind",
                    target_type="Session",
                    target_id=session_id,
                    details={"checkpointId": checkpoint_id, "runId": run.id, "conversation": conversation},
                )
                await session.commit()
        if not agent_is_live(row) and self.manager.can_execute:
            # Nobody runs the session: this replica takes it (its lease, its sandbox) for the rewind.
            # One that cannot start agents sends the command to all; the first to take the lease acts.
            await self.manager.adopt(session_id)
        command = RewindFiles(
            session_id=session_id,
            checkpoint_id=checkpoint_id,
            dry_run=dry_run,
            conversation=conversation,
            reply_to=f"reply:{uuid.uuid4()}",
        )
        answer = await self.router.ask(command, timeout=REWIND_TIMEOUT_SECONDS)
        if answer is None:
            raise CheckpointUnavailable(
                checkpoint_id, "the replica running the session did not answer in time"
            )
        if answer.get("busy"):
            raise SessionBusy(session_id, None)
        if answer.get("error"):
            raise CheckpointUnavailable(checkpoint_id, str(answer["error"]))
        return RewindOutcome(
            files_changed=[str(path) for path in answer.get("filesChanged") or []],
            insertions=int(answer.get("insertions") or 0),
            deletions=int(answer.get("deletions") or 0),
            applied=bool(answer.get("applied")),
        )

    async def fork(
        self, principal: Principal, session_id: str, at_message_id: str | None, title: str | None = None
    ) -> AgentSession:
        """A new session with a copy of the workspace and of the conversation (up to `at_message_id`);
        its first run resumes that copy into a conversation of its own (--fork-session)."""
        if title is not None:
            title = check_title(title)
        async with self.db.session() as session:
            parent = await SessionRepository(session).get(session_id, tenant_id=principal.tenant_id)
            if parent is None:
                raise NotFound("Session", session_id)
            active = await RunRepository(session).active_for_session(session_id)
        if active:
            raise SessionBusy(session_id, active[0].id)
        source = SessionPaths.of(self.settings.data_dir, principal.tenant_id, session_id)
        parent_store = session_store_for(self.settings, self.db, principal.tenant_id, session_id)
        if parent_store is not None:
            # The parent may have run on another replica: its conversation is in the store.
            await restore_transcript(parent_store, str(source.agent_dir), str(source.workspace), session_id)
        transcript = transcript_path(str(source.agent_dir), str(source.workspace), session_id)
        if not await asyncio.to_thread(transcript.exists):
            raise ValidationFailed("the session has no conversation to fork yet", field="sessionId")
        if (
            at_message_id is not None
            and await asyncio.to_thread(transcript_message, transcript, at_message_id) is None
        ):
            raise NotFound("Message", at_message_id)
        child_id = str(uuid.uuid4())
        child = await asyncio.to_thread(self.manager.launcher.paths, principal.tenant_id, child_id)
        created = False
        try:
            await asyncio.to_thread(_copy_for_fork, source, child, session_id)
            async with self.db.session() as session:
                sessions = SessionRepository(session)
                active = await RunRepository(session).active_for_session(session_id)
                if active:
                    # A run started during the copy: the copy may be torn.
                    raise SessionBusy(session_id, active[0].id)
                row = await sessions.create(
                    session_id=child_id,
                    tenant_id=principal.tenant_id,
                    title=title or ((parent.title or "")[:480] + FORK_SUFFIX).strip(),
                    at=utcnow(),
                    forked_from_id=session_id,
                    resume_at=at_message_id,
                    tags=parent.tags or [],
                )
                await audit.record(
                    session,
                    actor=principal,
                    action="session.fork",
                    target_type="Session",
                    target_id=child_id,
                    details={"forkedFrom": session_id, "atMessageId": at_message_id},
                )
                await session.commit()
            created = True
            child_store = session_store_for(self.settings, self.db, principal.tenant_id, child_id)
            if parent_store is not None and child_store is not None:
                # After the commit: the store's rows belong to the new session's row. The fork's first
                # run, on whichever replica, restores this copy and forks from it.
                await copy_for_fork(
                    parent_store,
                    child_store,
                    (str(child.agent_dir), str(child.workspace)),
                    session_id,
                )
        except BaseException:
            if created:
                await self._forget_fork(child_id)
            await asyncio.to_thread(remove_tree, child.root)
            raise
        await self.event_log.publish_session_change(principal.tenant_id, child_id, "CREATED")
        return row

    async def _forget_fork(self, child_id: str) -> None:
        """A fork whose conversation could not be copied to the store is no fork: its row goes."""
        try:
            async with self.db.session() as session:
                await SessionRepository(session).delete(child_id)
                await session.commit()
        except Exception:
            log.error("fork.row_left", session_id=child_id, exc_info=True)


def _copy_for_fork(source: SessionPaths, child: SessionPaths, parent_id: str) -> None:
    """The workspace as it is, and the parent's transcript where the child's CLI looks for it: under
    the project key of the child's own workspace (the key derives from cwd)."""
    copy_tree(source.workspace, child.workspace)
    parent_file = transcript_path(str(source.agent_dir), str(source.workspace), parent_id)
    target = transcript_path(str(child.agent_dir), str(child.workspace), parent_id)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copy2(parent_file, target)
    subagents = parent_file.with_suffix("")
    if subagents.is_dir():
        copy_tree(subagents, target.with_suffix(""))
