"""The sealed secrets in the store, taken together: counted by key, checked, sealed again.

Every column of :mod:`portico.store.tables` whose ``info`` carries
:data:`~portico.store.tables.SEALED` holds sealed secrets, one per row, each sealed for the
context ``<table>.<column>/<primary key>``. A capability that stores a secret declares its column
so, and the start-up check, ``portico secrets status`` and ``portico secrets rotate-key`` cover
it without knowing it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from portico.store.repositories import _Repository
from portico.store.secrets.envelope import FORMAT, PREFIX_LENGTH, Secrets, key_id_of
from portico.store.secrets.errors import SecretsKeyMissing, UnknownSecretsKey
from portico.store.tables import SEALED, metadata

__all__ = [
    "Inventory",
    "Resealed",
    "SealedColumn",
    "StoredSecrets",
    "context_of",
    "sealed_columns",
]

RESEAL_BATCH = 100
"""Rows sealed again per transaction: short write transactions beside serving gateways."""


def context_of(table: str, column: str, row_key: object) -> str:
    """What the secret of one row is sealed for: moved to another row, column or table, it does
    not open. Part of every stored ciphertext: it never changes."""
    return f"{table}.{column}/{row_key}"


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """A column of sealed secrets, and the one-column primary key each is bound to."""

    column: sa.Column[Any]
    row_key: sa.Column[Any]
    protects: str
    """What its secrets are, for people: ``OAuth signing keys``."""

    @property
    def name(self) -> str:
        return f"{self.table_name}.{self.column.name}"

    @property
    def table_name(self) -> str:
        return str(self.column.table.name)

    def context(self, row_key: object) -> str:
        """What the secret of the row ``row_key`` is sealed for (:func:`context_of`)."""
        return context_of(self.table_name, self.column.name, row_key)

    @classmethod
    def of(cls, column: sa.ColumnElement[Any]) -> SealedColumn:
        """The column ``column`` of a table (``SigningKeyRow.__table__.c.sealed_private_key``)."""
        if not isinstance(column, sa.Column) or SEALED not in column.info:
            raise TypeError(f"{column} is not a column marked {SEALED!r} in its info")
        keys = list(column.table.primary_key.columns)
        if len(keys) != 1:
            raise TypeError(f"sealed column {column}: its table needs a one-column primary key")
        return cls(column, keys[0], str(column.info[SEALED]))


def sealed_columns(schema: sa.MetaData = metadata) -> tuple[SealedColumn, ...]:
    """Every column of ``schema`` marked :data:`~portico.store.tables.SEALED`."""
    return tuple(
        SealedColumn.of(column)
        for table in schema.sorted_tables
        for column in table.columns
        if SEALED in column.info
    )


@dataclass(frozen=True, slots=True)
class Inventory:
    """How many secrets each key wrapped, column by column."""

    counts: Mapping[str | None, Mapping[str, int]]
    """Key id (``None``: not sealed, which Portico never writes) -> column name -> secrets."""

    def by_key(self) -> dict[str | None, int]:
        return {key: sum(columns.values()) for key, columns in self.counts.items()}

    @property
    def total(self) -> int:
        return sum(self.by_key().values())

    def unopenable(self, secrets: Secrets) -> dict[str | None, int]:
        """The secrets no configured key opens, by key id."""
        keys = secrets.configured()
        known = set(keys.ids) if keys is not None else set()
        return {key: n for key, n in self.by_key().items() if key is None or key not in known}


@dataclass(frozen=True, slots=True)
class Resealed:
    """What a rotation did."""

    key_id: str
    """The key every secret is sealed with now."""
    moved: dict[str, int] = field(default_factory=dict)
    """Key id it was sealed with -> secrets sealed again."""

    @property
    def total(self) -> int:
        return sum(self.moved.values())


class StoredSecrets(_Repository):
    """The sealed secrets of every sealed column."""

    def inventory(self) -> Inventory:
        counts: dict[str | None, dict[str, int]] = {}
        with self._transaction(write=False) as session:
            for sealed in sealed_columns():
                # The prefix names the key and has one length for all (envelope.PREFIX_LENGTH):
                # counted by the database, whatever the number of rows.
                prefix = sa.func.substr(sealed.column, 1, PREFIX_LENGTH)
                query = sa.select(prefix, sa.func.count()).group_by(prefix)
                for value, count in session.execute(query):
                    key = key_id_of(value or "")
                    by_column = counts.setdefault(key, {})
                    by_column[sealed.name] = by_column.get(sealed.name, 0) + int(count)
        return Inventory(counts)

    def check_openable(self, secrets: Secrets) -> Inventory:
        """Refuse a store holding secrets that no configured key opens (before serving)."""
        found = self.inventory()
        unopenable = found.unopenable(secrets)
        if not unopenable:
            return found
        count = sum(unopenable.values())
        which = ", ".join(f"{key or 'none (not sealed)'}: {n}" for key, n in unopenable.items())
        said = (
            f"the database holds {count} secret(s) that no configured secrets key opens "
            f"(by key {which})"
        )
        keys = secrets.configured()
        if keys is None:
            try:
                secrets.source.keys(create=False)
            except SecretsKeyMissing as exc:
                raise SecretsKeyMissing(f"{said}: {exc}") from None
        configured = ", ".join(keys.ids) if keys is not None else "none"
        raise UnknownSecretsKey(
            f"{said}; configured ({secrets.origin}): {configured}. Configure the key that "
            "sealed them beside the newest one (docs/secrets.md#rotating-the-key)"
        )

    def reseal(self, secrets: Secrets, *, batch: int = RESEAL_BATCH) -> Resealed:
        """Seal every secret not sealed with the newest key again with it.

        In short transactions of ``batch`` rows, each row rewritten only if it did not change
        meanwhile: serving gateways go on reading and writing, and a rotation that stops half
        way is finished by running it again.
        """
        newest = secrets.source.keys(create=False).newest.id
        done = Resealed(newest)
        current = f"{FORMAT}:{newest}:"
        for sealed in sealed_columns():
            after: object = None
            while True:
                with self._transaction(write=True) as session:
                    query = (
                        sa.select(sealed.row_key, sealed.column)
                        .where(sa.not_(sealed.column.startswith(current, autoescape=True)))
                        .order_by(sealed.row_key)
                        .limit(batch)
                        .with_for_update()
                    )
                    if after is not None:
                        query = query.where(sealed.row_key > after)
                    rows = session.execute(query).all()
                    for row_key, value in rows:
                        context = sealed.context(row_key)
                        again = secrets.seal(secrets.open(value, context), context)
                        updated = session.execute(
                            sa.update(sealed.column.table)
                            .where(sealed.row_key == row_key, sealed.column == value)
                            .values({sealed.column.name: again})
                        )
                        if updated.rowcount:  # type: ignore[attr-defined]
                            was = key_id_of(value) or "none"
                            done.moved[was] = done.moved.get(was, 0) + 1
                if len(rows) < batch:
                    break
                after = rows[-1][0]
        return done
