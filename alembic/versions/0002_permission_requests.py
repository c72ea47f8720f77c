"""permission requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import persistence.models  # noqa: F401  (UTCDateTime)

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "permission_requests",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("tool_name", sa.String(length=200), nullable=False),
        sa.Column("tool_use_id", sa.String(length=200), nullable=True),
        sa.Column("input", JSON, nullable=False),
        sa.Column("context", JSON, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("updated_input", JSON, nullable=True),
        sa.Column("allow_for_session", sa.Boolean(), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", persistence.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("decided_at", persistence.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", persistence.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
            name=op.f("fk_permission_requests_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_permission_requests_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permission_requests")),
    )
    with op.batch_alter_table("permission_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_permission_requests_run_id"), ["run_id"], unique=False)
        batch_op.create_index(
            "ix_permission_requests_session_id_created_at", ["session_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_permission_requests_tenant_id_status", ["tenant_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("permission_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_permission_requests_tenant_id_status")
        batch_op.drop_index("ix_permission_requests_session_id_created_at")
        batch_op.drop_index(batch_op.f("ix_permission_requests_run_id"))
    op.drop_table("permission_requests")
