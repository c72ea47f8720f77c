"""listing indexes: a tenant's sessions newest first, a session's runs in order, a tenant's active runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 12:30:00

Each composite index replaces the single-column one it starts with (which it serves as well):
- sessions (tenant_id, created_at, id): `sessions(first: 20)` reads the tenant's newest rows from the index
  (scanned backwards) instead of reading all of them and sorting;
- runs (session_id, created_at, id): a session's runs page, and the first page of many sessions at once;
- runs (tenant_id, status): the count of a tenant's QUEUED and RUNNING runs that MAX_ACTIVE_RUNS_PER_TENANT
  takes at every startRun.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_sessions_tenant_id_created_at_id", "sessions", ["tenant_id", "created_at", "id"])
    op.drop_index("ix_sessions_tenant_id", table_name="sessions")
    op.create_index("ix_runs_session_id_created_at_id", "runs", ["session_id", "created_at", "id"])
    op.drop_index("ix_runs_session_id", table_name="runs")
    op.create_index("ix_runs_tenant_id_status", "runs", ["tenant_id", "status"])
    op.drop_index("ix_runs_tenant_id", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_tenant_id", "runs", ["tenant_id"])
    op.drop_index("ix_runs_tenant_id_status", table_name="runs")
    op.create_index("ix_runs_session_id", "runs", ["session_id"])
    op.drop_index("ix_runs_session_id_created_at_id", table_name="runs")
    op.create_index("ix_sessions_tenant_id", "sessions", ["tenant_id"])
    op.drop_index("ix_sessions_tenant_id_created_at_id", table_name="sessions")
