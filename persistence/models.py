"""SQLAlchemy models: tenants, API keys, sessions, runs, the event log and the audit trail.

The same schema runs on PostgreSQL and SQLite, so types stay portable: JSON becomes JSONB on PostgreSQL,
datetimes are stored in UTC and always read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is UTC in and timezone-aware out, on SQLite too (which keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime()}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key. Only a SHA-256 of the secret is stored; `prefix` finds the row without a scan."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AgentSession(Base):
    """A conversation with one agent. Its id is the SDK/CLI session id, chosen by the server.

    `last_seq` is the event log's high-water mark: seq allocation is an UPDATE of this row, so the row
    lock orders concurrent writers and seq order equals commit order.
    The lease columns record which replica runs the session's CLI (docs/architecture.md, decision 4).
    """

    __tablename__ = "sessions"
    # A tenant's sessions newest first, read from the index rather than sorted (migration 0004).
    __table_args__ = (sa.Index("ix_sessions_tenant_id_created_at_id", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(sa.String(500))
    status: Mapped[str] = mapped_column(sa.String(20), default="IDLE")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_seq: Mapped[int] = mapped_column(default=0)
    total_cost_usd: Mapped[float] = mapped_column(sa.Float, default=0.0)
    forked_from_id: Mapped[str | None] = mapped_column(sa.ForeignKey("sessions.id", ondelete="SET NULL"))
    # The caller's labels, in the order given (renameSession / setSessionTags / archiveSession).
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    archived_at: Mapped[datetime | None]
    # Where the next CLI connection starts the conversation: a transcript message uuid
    # (resume_session_at) set by a fork at a message or a rewind of the conversation; cleared once used.
    resume_at: Mapped[str | None] = mapped_column(sa.String(64))
    # A fork's parent session id until the fork's own transcript exists (its first connection forks it).
    fork_source_id: Mapped[str | None] = mapped_column(sa.String(36))
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200))
    # In the database's clock, never a replica's (persistence/repositories/leases.py).
    lease_expires_at: Mapped[datetime | None]
    # The lease's generation: raised on every claim by a new holder and on every reaping, and checked
    # by each write of the holder, so a replica that lost the lease cannot write (the fencing token).
    lease_token: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class Run(Base):
    """One prompt sent to a session, from QUEUED to a terminal status."""

    __tablename__ = "runs"
    __table_args__ = (
        sa.Index("ix_runs_status_created_at", "status", "created_at"),
        sa.Index("ix_runs_session_id_created_at_id", "session_id", "created_at", "id"),
        sa.Index("ix_runs_tenant_id_status", "tenant_id", "status"),
        # The usage report and the daily budget: a tenant's runs of a period (migration 0008).
        sa.Index("ix_runs_tenant_id_created_at", "tenant_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.String(20), default="QUEUED")
    prompt: Mapped[str] = mapped_column(sa.Text)
    # The validated run options (model, tools, limits…) as the policy accepted them.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The uuid the prompt was sent with: the CLI's file checkpoint id for rewind.
    prompt_uuid: Mapped[str] = mapped_column(sa.String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    interrupt_requested: Mapped[bool] = mapped_column(default=False)
    # This run's own cost and token usage (the CLI reports a per-process running total; see
    # session_actor._result_outcome). None before it ended or when the agent reported none.
    cost_usd: Mapped[float | None] = mapped_column(sa.Float)
    usage: Mapped[dict[str, Any] | None]
    replica: Mapped[str | None] = mapped_column(sa.String(200))
    api_key_id: Mapped[str | None] = mapped_column(sa.String(36))


class Event(Base):
    """One durable event of a session's log: seq is 1, 2, 3… per session with no gaps."""

    __tablename__ = "events"

    session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    run_id: Mapped[str | None] = mapped_column(sa.String(36))
    kind: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to what, and when: every control action leaves one."""

    __tablename__ = "audit_entries"
    __table_args__ = (sa.Index("ix_audit_entries_tenant_id_id", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.String(36))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    action: Mapped[str] = mapped_column(sa.String(80))
    actor: Mapped[str] = mapped_column(sa.String(200))
    target_type: Mapped[str] = mapped_column(sa.String(40))
    target_id: Mapped[str] = mapped_column(sa.String(200))
    details: Mapped[dict[str, Any] | None]


class Webhook(Base):
    """A tenant's HTTPS endpoint that answers the agent's hook events (PreToolUse, Stop…).

    The secret signs each call (HMAC-SHA256), so it is kept as given: the server must be able to sign.
    It never leaves the server through the API.
    """

    __tablename__ = "webhooks"
    __table_args__ = (sa.Index("ix_webhooks_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(sa.String(2000))
    # The hook event names it receives, e.g. ["PreToolUse", "Stop"].
    events: Mapped[list[str]] = mapped_column(JSONType)
    secret: Mapped[str] = mapped_column(sa.String(500))
    # OPEN or CLOSED; None: the event's default (PreToolUse fails closed, the others open).
    failure_mode: Mapped[str | None] = mapped_column(sa.String(10))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    api_key_id: Mapped[str | None] = mapped_column(sa.String(36))


class PermissionRequest(Base):
    """A tool call the agent asked permission for, from PENDING to ALLOWED, DENIED, EXPIRED or CANCELLED.

    The row is the truth for every replica: a decision is a compare-and-set on `status` (only a PENDING
    request can be decided), and the replica running the session reads it back before answering the CLI.
    """

    __tablename__ = "permission_requests"
    __table_args__ = (
        sa.Index("ix_permission_requests_tenant_id_status", "tenant_id", "status"),
        sa.Index("ix_permission_requests_session_id_created_at", "session_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    run_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    tool_name: Mapped[str] = mapped_column(sa.String(200))
    tool_use_id: Mapped[str | None] = mapped_column(sa.String(200))
    input: Mapped[dict[str, Any]]
    # What the CLI says about the request: title, display name, description, blocked path, agent id.
    context: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(sa.String(20), default="PENDING")
    message: Mapped[str | None] = mapped_column(sa.Text)
    updated_input: Mapped[dict[str, Any] | None]
    allow_for_session: Mapped[bool] = mapped_column(default=False)
    decided_by: Mapped[str | None] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]


class TranscriptEntry(Base):
    """One line of an agent transcript mirrored by the SDK (SESSION_STORE=database), in append order.

    Rows belong to one of our sessions (`owner_session_id`) and its tenant: the store that reads and
    writes them is bound to that pair, so a session never sees another's transcript. Within it, the
    SDK's own key (`project_key`, `transcript_id`, `subpath`; '' for the main transcript) is kept
    verbatim. `id` orders the lines; `uuid` (when the line has one) makes a retried batch harmless.
    """

    __tablename__ = "transcript_entries"
    __table_args__ = (
        sa.Index(
            "ix_transcript_entries_key_id",
            "owner_session_id",
            "project_key",
            "transcript_id",
            "subpath",
            "id",
        ),
        sa.Index(
            "uq_transcript_entries_key_uuid",
            "owner_session_id",
            "project_key",
            "transcript_id",
            "subpath",
            "uuid",
            unique=True,
        ),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    owner_session_id: Mapped[str] = mapped_column(sa.ForeignKey("sessions.id", ondelete="CASCADE"))
    project_key: Mapped[str] = mapped_column(sa.String(255))
    transcript_id: Mapped[str] = mapped_column(sa.String(255))
    subpath: Mapped[str] = mapped_column(sa.String(500))
    uuid: Mapped[str | None] = mapped_column(sa.String(255))
    entry: Mapped[dict[str, Any]]


class Transcript(Base):
    """A main transcript of the store: its last write time (epoch ms) and the SDK's folded summary."""

    __tablename__ = "transcripts"

    owner_session_id: Mapped[str] = mapped_column(
        sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    project_key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    transcript_id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    mtime_ms: Mapped[int] = mapped_column(sa.BigInteger)
    summary: Mapped[dict[str, Any] | None]


class Deployment(Base):
    """The one row naming this deployment, the replicas that share this database: its id keeps their
    control channel apart from another deployment's on the same Redis (api/control/channel.py)."""

    __tablename__ = "deployment"
    __table_args__ = (sa.CheckConstraint("singleton = 1", name="singleton"),)

    singleton: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(sa.String(36))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
