"""Webhook endpoints' limits kept in the store: the rate limit's state and the deliveries held
under the concurrency, shared by every delivering process.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Nullable columns: SQLite adds them in place; NULL is "no state yet" for both.
    op.add_column("webhook_endpoints", sa.Column("rate_tat", sa.Float(precision=53), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("held", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_endpoints") as table:
        table.drop_column("held")
        table.drop_column("rate_tat")
