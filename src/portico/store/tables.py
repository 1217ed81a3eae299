"""The store's tables, declared once for SQLite and PostgreSQL alike.

Migrations in ``portico.store.migrations`` create these tables explicitly; a test compares the
migrated schema with this metadata on both backends, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AuditLogRow", "Base", "ConfigRevisionRow", "UTCDateTime", "metadata"]

# Deterministic constraint names: SQLite batch migrations and PostgreSQL ALTERs both need them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY, so BIGINT there would never be filled in.
BigIntegerKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back as a timezone-aware UTC ``datetime``.

    PostgreSQL keeps ``timestamptz`` and answers in the session time zone; SQLite keeps text
    without an offset. Both come back as UTC here, and naive values are refused on the way in.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware values only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


metadata = Base.metadata


class ConfigRevisionRow(Base):
    """One applied version of the YAML configuration, as the user wrote it."""

    __tablename__ = "config_revisions"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64), index=True)
    source: Mapped[str] = mapped_column(sa.Text)
    # The file text before interpolation: secrets referenced from the environment never land here.
    body: Mapped[str] = mapped_column(sa.Text)
    applied_by: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class AuditLogRow(Base):
    """Who did what to which object, appended and never updated."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(sa.Text)
    action: Mapped[str] = mapped_column(sa.Text)
    target: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)
