"""Control plane: admin tokens, and the audit log's role, tenant, request id, before and after.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "admin_tokens",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("sha256", sa.CHAR(64), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_tokens"),
    )
    # Nullable columns: SQLite adds them in place, existing entries (the CLI's) keep NULL.
    op.add_column("audit_log", sa.Column("actor_role", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("tenant", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("request_id", sa.Text(), nullable=True))
    op.add_column("audit_log", sa.Column("before_state", sa.JSON(), nullable=True))
    op.add_column("audit_log", sa.Column("after_state", sa.JSON(), nullable=True))
    op.create_index("ix_audit_log_tenant", "audit_log", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_tenant", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        for column in ("after_state", "before_state", "request_id", "tenant", "actor_role"):
            batch.drop_column(column)
    op.drop_table("admin_tokens")
