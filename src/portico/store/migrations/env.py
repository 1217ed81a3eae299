"""Alembic environment for the store; run through ``portico.store.migrate``, not an alembic.ini.

``migrate.py`` opens the connection (with the store's SQLite pragmas and the migration lock) and
passes it in ``config.attributes["connection"]``; all revisions then run in its transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from portico.store.migrate import VERSION_TABLE
from portico.store.tables import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported; run `portico db upgrade`")

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through portico.store.migrate, which supplies a connection")
run_migrations(connection)
