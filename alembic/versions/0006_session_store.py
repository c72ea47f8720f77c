"""session store: agent transcripts in the database (SESSION_STORE=database)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 14:45:00

Written alongside other branches' migrations; at merge, down_revision becomes the latest one's id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "transcript_entries",
        sa.Column("id", BIGINT_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("owner_session_id", sa.String(length=36), nullable=False),
        sa.Column("project_key", sa.String(length=255), nullable=False),
        sa.Column("transcript_id", sa.String(length=255), nullable=False),
        sa.Column("subpath", sa.String(length=500), nullable=False),
        sa.Column("uuid", sa.String(length=255), nullable=True),
        sa.Column("entry", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_session_id"],
            ["sessions.id"],
            name=op.f("fk_transcript_entries_owner_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_transcript_entries_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_entries")),
    )
    op.create_index(
        "ix_transcript_entries_key_id",
        "transcript_entries",
        ["owner_session_id", "project_key", "transcript_id", "subpath", "id"],
        unique=False,
    )
    op.create_index(
        "uq_transcript_entries_key_uuid",
        "transcript_entries",
        ["owner_session_id", "project_key", "transcript_id", "subpath", "uuid"],
        unique=True,
    )
    op.create_table(
        "transcripts",
        sa.Column("owner_session_id", sa.String(length=36), nullable=False),
        sa.Column("project_key", sa.String(length=255), nullable=False),
        sa.Column("transcript_id", sa.String(length=255), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("mtime_ms", sa.BigInteger(), nullable=False),
        sa.Column("summary", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_session_id"],
            ["sessions.id"],
            name=op.f("fk_transcripts_owner_session_id_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_transcripts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "owner_session_id", "project_key", "transcript_id", name=op.f("pk_transcripts")
        ),
    )


def downgrade() -> None:
    op.drop_table("transcripts")
    op.drop_index("uq_transcript_entries_key_uuid", table_name="transcript_entries")
    op.drop_index("ix_transcript_entries_key_id", table_name="transcript_entries")
    op.drop_table("transcript_entries")
