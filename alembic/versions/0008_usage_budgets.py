"""usage and budgets: a tenant's runs by creation time

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 14:50:00

runs (tenant_id, created_at): the `usage` report and the daily budget check (every startRun when
TENANT_DAILY_BUDGET_USD is set) read one range of a tenant's runs instead of all of them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_runs_tenant_id_created_at", "runs", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_tenant_id_created_at", table_name="runs")
