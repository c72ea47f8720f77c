"""session lifecycle: tags, archive, fork and rewind bookkeeping; each run's own cost and usage

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-27 12:50:00

Written alongside 0004 (another branch); at merge, down_revision becomes that revision's id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import persistence.models  # noqa: F401  (UTCDateTime)

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tags", JSON, nullable=False, server_default="[]"))
        batch_op.add_column(
            sa.Column("archived_at", persistence.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("resume_at", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("fork_source_id", sa.String(length=36), nullable=True))
    # The default only fills existing rows; the models always write the column.
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.alter_column("tags", server_default=None)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_usd", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("usage", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("usage")
        batch_op.drop_column("cost_usd")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("fork_source_id")
        batch_op.drop_column("resume_at")
        batch_op.drop_column("archived_at")
        batch_op.drop_column("tags")
