"""Webhook endpoint changes: a counter the database moves with every change to who receives what.

The single row of ``webhook_endpoint_changes`` is incremented by triggers on
``webhook_endpoints`` (a row inserted or deleted; its ``id``, ``tenant``, ``types``, ``filter``,
``ordering_key`` or ``disabled_at`` updated), in the transaction of the change: publishers keep
the subscribed endpoints in memory and read them again only when the counter moved.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

# The columns publishing reads (events/publishing.py); a change to another one (url, secrets,
# limits, failing_since) does not change which endpoints an event goes to.
_COLUMNS = "id, tenant, types, filter, ordering_key, disabled_at"
_BUMP = "UPDATE webhook_endpoint_changes SET version = version + 1 WHERE id = 1"


def upgrade() -> None:
    changes = op.create_table(
        "webhook_endpoint_changes",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_webhook_endpoint_changes_single_row")),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoint_changes"),
    )
    op.bulk_insert(changes, [{"id": 1, "version": 0}])
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's triggers are row triggers; ``UPDATE OF`` fires when a column is in the SET.
        for name, event in (
            ("insert", "INSERT"),
            ("delete", "DELETE"),
            ("update", f"UPDATE OF {_COLUMNS}"),
        ):
            op.execute(
                f"CREATE TRIGGER webhook_endpoints_changed_{name} AFTER {event} "
                f"ON webhook_endpoints BEGIN {_BUMP}; END"
            )
        return
    op.execute(
        "CREATE FUNCTION webhook_endpoints_changed() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {_BUMP}; RETURN NULL; END $$"
    )
    # Statement triggers: one increment per statement, however many rows it changed.
    op.execute(
        "CREATE TRIGGER webhook_endpoints_changed AFTER INSERT OR DELETE OR UPDATE OF "
        f"{_COLUMNS} ON webhook_endpoints FOR EACH STATEMENT "
        "EXECUTE FUNCTION webhook_endpoints_changed()"
    )
    op.execute(
        "CREATE TRIGGER webhook_endpoints_truncated AFTER TRUNCATE ON webhook_endpoints "
        "FOR EACH STATEMENT EXECUTE FUNCTION webhook_endpoints_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER webhook_endpoints_changed_{name}")
    else:
        op.execute("DROP TRIGGER webhook_endpoints_truncated ON webhook_endpoints")
        op.execute("DROP TRIGGER webhook_endpoints_changed ON webhook_endpoints")
        op.execute("DROP FUNCTION webhook_endpoints_changed()")
    op.drop_table("webhook_endpoint_changes")
