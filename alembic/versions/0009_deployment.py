"""deployment: one row naming the deployment that shares this database

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 15:20:00

Its id namespaces the control channel, so deployments on one Redis stop hearing each other's commands
and dispatch wake-ups. The first replica to start writes the row (persistence/repositories/deployment.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("singleton", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("singleton = 1", name=op.f("ck_deployment_singleton")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_deployment")),
    )


def downgrade() -> None:
    op.drop_table("deployment")
