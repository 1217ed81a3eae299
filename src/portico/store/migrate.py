"""Schema migrations: Alembic, configured in code, with the revisions shipped in the package.

``portico db upgrade`` calls ``db_upgrade_command``; ``portico serve`` calls ``ensure_current``,
which migrates a SQLite file itself and asks for ``portico db upgrade`` on PostgreSQL, where
several processes may start at once and schema changes are the operator's decision.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from portico.store.database import (
    StoreError,
    create_engine_for,
    display_url,
    normalise_url,
    write_engine,
)

if TYPE_CHECKING:
    from portico.store.secrets import Secrets

__all__ = [
    "MIGRATIONS",
    "VERSION_TABLE",
    "SchemaNotCurrent",
    "UnknownSchemaRevision",
    "alembic_config",
    "current_revision",
    "db_upgrade_command",
    "ensure_current",
    "head_revision",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")
# Not Alembic's default name, so Portico can share a PostgreSQL database with other Alembic users.
VERSION_TABLE = "portico_alembic_version"
# pg_advisory_xact_lock key ("port") that serialises concurrent upgrades of one database.
_MIGRATION_LOCK_KEY = 0x706F7274


class SchemaNotCurrent(StoreError):
    """The database schema is older than this version of Portico needs."""


class UnknownSchemaRevision(StoreError):
    """The database was migrated to a revision this version of Portico does not ship."""


def alembic_config() -> Config:
    """An Alembic ``Config`` for the packaged migrations; no alembic.ini involved."""
    config = Config()
    # ConfigParser interpolation would eat a "%" in the install path.
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str:
    """The newest revision this version of Portico ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head revision"
    return head


def upgrade(url: str, revision: str = "head", secrets: Secrets | None = None) -> None:
    """Migrate the database at ``url`` to ``revision``; does nothing when it is already there.

    ``secrets``: what a revision that seals stored values uses (0003 seals the OAuth signing
    keys stored before in plain text); without, such a revision fails if it has any to seal.
    """
    _upgrade(url, revision, secrets)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or ``None`` if it was never migrated."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return _current(connection)
    finally:
        engine.dispose()


def ensure_current(url: str, secrets: Secrets | None = None) -> None:
    """Make sure the schema is at head before serving.

    SQLite is migrated in place. PostgreSQL is only checked: ``SchemaNotCurrent`` asks the
    operator to run ``portico db upgrade``. ``secrets``: as for :func:`upgrade`.
    """
    if normalise_url(url).get_backend_name() == "sqlite":
        upgrade(url, secrets=secrets)
        return
    current = current_revision(url)
    _check_known(current)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database at {display_url(url)} is at schema revision {current or '(empty)'} "
            f"and this version of Portico needs {head}: run `portico db upgrade`"
        )


def db_upgrade_command(url: str, secrets: Secrets | None = None) -> int:
    """``portico db upgrade``: migrate to head and say from which revision to which."""
    try:
        normalise_url(url)
    except StoreError as exc:
        print(f"portico db upgrade: {exc}", file=sys.stderr)
        return 1
    shown = display_url(url)
    try:
        before, after = _upgrade(url, "head", secrets)
    except StoreError as exc:
        print(f"portico db upgrade: {exc}", file=sys.stderr)
        return 1
    except sa.exc.DBAPIError as exc:
        print(f"portico db upgrade: {shown}: {exc.orig}".rstrip(), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"portico db upgrade: {shown}: {exc}", file=sys.stderr)
        return 1
    if before == after:
        print(f"{shown}: already at revision {_describe(after)}, nothing to do")
    else:
        print(f"{shown}: upgraded from {_describe(before)} to {_describe(after)}")
    return 0


def _upgrade(url: str, revision: str, secrets: Secrets | None) -> tuple[str | None, str | None]:
    engine = create_engine_for(url)
    try:
        # One transaction for the lock, the check and every revision: a failed migration leaves
        # the schema as it was (PostgreSQL and SQLite both have transactional DDL).
        with write_engine(engine).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            before = _current(connection)
            _check_known(before)
            config = alembic_config()
            config.attributes["connection"] = connection
            config.attributes["secrets"] = secrets
            try:
                command.upgrade(config, revision)
            except CommandError as exc:
                raise StoreError(f"cannot upgrade to {revision!r}: {exc}") from exc
            return before, _current(connection)
    finally:
        engine.dispose()


def _current(connection: sa.Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    revision: str | None = context.get_current_revision()
    return revision


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError as exc:
        raise UnknownSchemaRevision(
            f"the database is at schema revision {revision!r}, which this version of Portico "
            "does not know; it was probably migrated by a newer Portico"
        ) from exc


def _describe(revision: str | None) -> str:
    if revision is None:
        return "(empty)"
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    return (
        f"{revision} ({script.doc.rstrip('.')})" if script is not None and script.doc else revision
    )
