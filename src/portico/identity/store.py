"""Identity data in the store: API keys, and the change counter gateways poll.

Every write to identity data (an API key created, rotated or revoked; a signing key rotated; a
token revoked) calls :meth:`IdentityChanges.bump` in the same transaction. Each gateway process
polls :meth:`IdentityChanges.version` a few times a second and reloads what it keeps in memory
when the number moved (see :mod:`portico.identity.state`).

Only the SHA-256 of an API key is stored; the key itself is shown once, when it is made.

    with database.write() as session:
        key = ApiKeys(session).add("k3x9q2", "acme/billing", sha256, now=now)
        AuditLog(session).append("cli:alice", "api_key.create", key.id, {"consumer": key.consumer})
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portico.store.database import Database, StoreError
from portico.store.repositories import _Repository
from portico.store.tables import ApiKeyRow, IdentityChangeRow, utc_now

__all__ = [
    "ApiKeyNotFound",
    "ApiKeyNotUsable",
    "ApiKeys",
    "IdentityChanges",
    "StoredApiKey",
]


class ApiKeyNotFound(StoreError, LookupError):
    """No API key with this id is in the database."""


class ApiKeyNotUsable(StoreError):
    """The key cannot be rotated: it was revoked or already rotated."""


@dataclass(frozen=True, slots=True)
class StoredApiKey:
    id: str
    consumer: str
    """``tenant/consumer``."""
    sha256: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_to: str | None
    overlap_until: datetime | None

    @property
    def valid_until(self) -> datetime | None:
        """The moment the key stops working (expiry, end of rotation overlap, revocation)."""
        ends = [t for t in (self.expires_at, self.overlap_until, self.revoked_at) if t is not None]
        return min(ends) if ends else None

    def status(self, now: datetime) -> str:
        """``active``, ``rotated`` (still in its overlap), ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        end = self.valid_until
        if end is not None and end <= now:
            return "expired"
        return "rotated" if self.rotated_to is not None else "active"


_VERSION = sa.select(IdentityChangeRow.version).where(IdentityChangeRow.id == 1)


class IdentityChanges(_Repository):
    """The single counter that says "identity data changed"."""

    def version(self) -> int:
        binding = self._binding
        if isinstance(binding, Session):
            value = binding.scalar(_VERSION)
        else:
            # Every gateway polls this several times a second from a thread that shares the
            # GIL with the event loop: a plain pooled connection, no ORM session.
            engine = binding.engine if isinstance(binding, Database) else binding
            with engine.connect() as connection:
                value = connection.scalar(_VERSION)
        return int(value or 0)

    def bump(self) -> int:
        """Increment the counter in the current transaction; returns the new version.

        Built over a ``Session``, it commits (or rolls back) with the write it announces, so a
        gateway never sees the new version without the new data.
        """
        with self._transaction(write=True) as session:
            return _bump(session)


class ApiKeys(_Repository):
    """API keys made with ``portico keys``: created, listed, rotated and revoked."""

    def add(
        self,
        key_id: str,
        consumer: str,
        sha256: str,
        *,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> StoredApiKey:
        row = ApiKeyRow(
            id=key_id,
            consumer=consumer,
            sha256=sha256,
            created_at=now or utc_now(),
            expires_at=expires_at,
        )
        with self._transaction(write=True) as session:
            session.add(row)
            session.flush()
            _bump(session)
            return _stored(row)

    def get(self, key_id: str) -> StoredApiKey | None:
        with self._transaction(write=False) as session:
            row = session.get(ApiKeyRow, key_id)
            return None if row is None else _stored(row)

    def lock(self, key_id: str) -> StoredApiKey:
        """The key, locked until the transaction ends (``FOR UPDATE`` on PostgreSQL): a change
        decided on what it reads cannot be lost to a concurrent one. Raises
        :class:`ApiKeyNotFound`."""
        with self._transaction(write=True) as session:
            return _stored(_locked(session, key_id))

    def list(self, consumer: str | None = None) -> builtins.list[StoredApiKey]:
        """Every key (of one consumer when given), oldest first."""
        query = sa.select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if consumer is not None:
            query = query.where(ApiKeyRow.consumer == consumer)
        with self._transaction(write=False) as session:
            return [_stored(row) for row in session.scalars(query)]

    def usable(self, now: datetime) -> builtins.list[StoredApiKey]:
        """The keys that still work at ``now``: what a gateway keeps in memory."""
        query = sa.select(ApiKeyRow).where(
            ApiKeyRow.revoked_at.is_(None),
            sa.or_(ApiKeyRow.expires_at.is_(None), ApiKeyRow.expires_at > now),
            sa.or_(ApiKeyRow.overlap_until.is_(None), ApiKeyRow.overlap_until > now),
        )
        with self._transaction(write=False) as session:
            return [_stored(row) for row in session.scalars(query)]

    def rotate(
        self,
        key_id: str,
        new_id: str,
        new_sha256: str,
        *,
        overlap_until: datetime,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> tuple[StoredApiKey, StoredApiKey]:
        """Replace ``key_id`` with a new key of the same consumer; the old one keeps working
        until ``overlap_until`` (or its own expiry, if sooner). Returns ``(old, new)``."""
        now = now or utc_now()
        with self._transaction(write=True) as session:
            old = _locked(session, key_id)
            if old.revoked_at is not None:
                raise ApiKeyNotUsable(f"API key {key_id} is revoked")
            if old.rotated_to is not None:
                raise ApiKeyNotUsable(f"API key {key_id} was already rotated to {old.rotated_to}")
            if old.expires_at is not None and old.expires_at <= now:
                raise ApiKeyNotUsable(f"API key {key_id} has expired")
            new = ApiKeyRow(
                id=new_id,
                consumer=old.consumer,
                sha256=new_sha256,
                created_at=now,
                expires_at=expires_at,
            )
            session.add(new)
            old.rotated_to = new_id
            old.overlap_until = overlap_until
            session.flush()
            _bump(session)
            return _stored(old), _stored(new)

    def revoke(self, key_id: str, *, now: datetime | None = None) -> StoredApiKey:
        """Make the key stop working now. Revoking a revoked key changes nothing."""
        with self._transaction(write=True) as session:
            row = _locked(session, key_id)
            if row.revoked_at is None:
                row.revoked_at = now or utc_now()
                session.flush()
                _bump(session)
            return _stored(row)


def _bump(session: Session) -> int:
    values = {"version": IdentityChangeRow.version + 1, "changed_at": utc_now()}
    version = session.scalar(
        sa.update(IdentityChangeRow)
        .where(IdentityChangeRow.id == 1)
        .values(**values)
        .returning(IdentityChangeRow.version)
    )
    if version is None:  # the row is created by the migration; recreate it if someone deleted it
        session.add(IdentityChangeRow(id=1, version=1))
        session.flush()
        return 1
    return int(version)


def _locked(session: Session, key_id: str) -> ApiKeyRow:
    # FOR UPDATE on PostgreSQL: a concurrent rotate or revoke of the same key waits for this one.
    # SQLite ignores it; its write transactions are serialised by BEGIN IMMEDIATE already.
    row = session.scalars(
        sa.select(ApiKeyRow).where(ApiKeyRow.id == key_id).with_for_update()
    ).first()
    if row is None:
        raise ApiKeyNotFound(f"no API key {key_id} in the database")
    return row


def _stored(row: ApiKeyRow) -> StoredApiKey:
    return StoredApiKey(
        id=row.id,
        consumer=row.consumer,
        sha256=row.sha256,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        rotated_to=row.rotated_to,
        overlap_until=row.overlap_until,
    )
