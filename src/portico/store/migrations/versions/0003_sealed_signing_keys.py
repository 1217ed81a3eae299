"""Secrets at rest: the OAuth signing keys' private halves sealed.

Revision ID: 0003
Revises: 0002

``signing_keys.private_pem`` (plain text) becomes ``signing_keys.sealed_private_key``, each row's
key sealed for its row (:mod:`portico.store.secrets`) with the keys ``portico.store.migrate``
hands over in ``config.attributes["secrets"]``: those of the config being served or upgraded.
A store with signing keys cannot be upgraded without a secrets key; the upgrade then fails, in
its one transaction, and leaves the schema as it was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from portico.store.secrets import Secrets, SecretsKeyMissing
from portico.store.secrets.stored import context_of

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # Freed pages (the plain-text rows once rewritten) are overwritten with zeros rather
        # than left in the file for the next write to reuse.
        op.execute("PRAGMA secure_delete = ON")
    with op.batch_alter_table("signing_keys") as batch:
        batch.add_column(sa.Column("sealed_private_key", sa.Text(), nullable=True))

    table = sa.table(
        "signing_keys",
        sa.column("kid", sa.Text()),
        sa.column("private_pem", sa.Text()),
        sa.column("sealed_private_key", sa.Text()),
    )
    rows = bind.execute(sa.select(table.c.kid, table.c.private_pem)).all()
    secrets = context.config.attributes.get("secrets")
    if rows:
        why = (
            f"upgrading to 0003 seals the {len(rows)} OAuth signing key(s) this database holds "
            "in plain text, with the secrets key"
        )
        if not isinstance(secrets, Secrets):
            raise SecretsKeyMissing(f"{why}, and none was given")
        for kid, pem in rows:
            try:
                sealed = secrets.seal(
                    pem.encode("ascii"), context_of("signing_keys", "sealed_private_key", kid)
                )
            except SecretsKeyMissing as exc:
                raise SecretsKeyMissing(f"{why}: {exc}") from None
            # The plain text is emptied in the same write: PostgreSQL keeps a dropped column's
            # values in the rows until they are rewritten.
            bind.execute(
                sa.update(table)
                .where(table.c.kid == kid)
                .values(sealed_private_key=sealed, private_pem="")
            )

    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("private_pem")
        batch.alter_column("sealed_private_key", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    raise NotImplementedError(
        "0003 is not undone: it would write the OAuth signing keys back in plain text"
    )
