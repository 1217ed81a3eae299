"""Admin tokens: long random secrets with a visible id, stored only as a SHA-256 hash.

A token reads ``padm_<id>_<secret>``: the prefix lets secret scanners (and people) recognise a
Portico admin token wherever it leaks; the id (12 lower-case letters and digits) is not secret
and is what ``portico admin tokens list`` and the audit log name; the secret is
``secrets.token_urlsafe(32)``, 256 bits, so a plain SHA-256 of the whole token is enough.

The token is shown once, when it is made. A request presents it as ``Authorization: Bearer
<token>``; :meth:`AdminTokens.verify` looks the id up and compares the digests in constant time,
an unknown id against a digest no token has, so that timing tells nothing either.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from portico.admin.roles import Role
from portico.store.database import StoreError
from portico.store.repositories import _Repository
from portico.store.tables import AdminTokenRow, utc_now

__all__ = [
    "TOKEN_PREFIX",
    "AdminToken",
    "AdminTokenNotFound",
    "AdminTokens",
    "NewAdminToken",
    "generate_token",
    "token_id_of",
]

TOKEN_PREFIX = "padm_"  # noqa: S105 - the public prefix of every token, not a secret
ID_LENGTH = 12
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_BYTES = 32
MAX_TOKEN_LENGTH = 200
"""Longer values are not tokens of ours; they are refused before hashing."""
_NO_DIGEST = "-" * 64


class AdminTokenNotFound(StoreError, LookupError):
    """No admin token with this id is in the database."""


@dataclass(frozen=True, slots=True)
class NewAdminToken:
    """A token just generated: ``token`` is shown once and never stored."""

    id: str
    token: str = field(repr=False)
    sha256: str


@dataclass(frozen=True, slots=True)
class AdminToken:
    id: str
    role: Role
    tenant: str | None
    """The one tenant the token sees; ``None``: every tenant."""
    description: str | None
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def generate_token() -> NewAdminToken:
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return NewAdminToken(token_id, token, _digest(token))


def token_id_of(token: str) -> str | None:
    """The id part of ``padm_<id>_<secret>``, or ``None`` if ``token`` does not have that shape."""
    if len(token) > MAX_TOKEN_LENGTH or not token.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or not secret or not token_id.isalnum() or not token_id.isascii():
        return None
    return token_id


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class AdminTokens(_Repository):
    """The admin tokens in the store."""

    def add(
        self,
        new: NewAdminToken,
        role: Role,
        *,
        tenant: str | None = None,
        description: str | None = None,
        created_by: str | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> AdminToken:
        row = AdminTokenRow(
            id=new.id,
            sha256=new.sha256,
            role=role.value,
            tenant=tenant,
            description=description,
            created_at=now or utc_now(),
            created_by=created_by,
            expires_at=expires_at,
        )
        with self._transaction(write=True) as session:
            session.add(row)
            session.flush()
            return _token(row)

    def get(self, token_id: str) -> AdminToken | None:
        with self._transaction(write=False) as session:
            row = session.get(AdminTokenRow, token_id)
            return None if row is None else _token(row)

    def list(self) -> builtins.list[AdminToken]:
        """Every token, oldest first."""
        query = sa.select(AdminTokenRow).order_by(AdminTokenRow.created_at, AdminTokenRow.id)
        with self._transaction(write=False) as session:
            return [_token(row) for row in session.scalars(query)]

    def revoke(self, token_id: str, *, now: datetime | None = None) -> tuple[AdminToken, bool]:
        """Make the token stop working now; ``(token, whether it changed)``."""
        with self._transaction(write=True) as session:
            row = session.scalars(
                sa.select(AdminTokenRow).where(AdminTokenRow.id == token_id).with_for_update()
            ).first()
            if row is None:
                raise AdminTokenNotFound(f"no admin token {token_id} in the database")
            changed = row.revoked_at is None
            if changed:
                row.revoked_at = now or utc_now()
                session.flush()
            return _token(row), changed

    def verify(self, token: str, now: datetime) -> AdminToken | None:
        """The token ``token`` is, if it is one and works at ``now`` (not expired nor revoked)."""
        token_id = token_id_of(token)
        found: tuple[AdminToken, str] | None = None
        if token_id is not None:
            with self._transaction(write=False) as session:
                row = session.get(AdminTokenRow, token_id)
                found = None if row is None else (_token(row), row.sha256)
        expected = found[1] if found is not None else _NO_DIGEST
        # Hashed and compared whatever happened, so that timing does not tell which check failed.
        matches = hmac.compare_digest(_digest(token), expected)
        if found is None or not matches:
            return None
        admin_token = found[0]
        return admin_token if admin_token.status(now) == "active" else None


def _token(row: AdminTokenRow) -> AdminToken:
    return AdminToken(
        id=row.id,
        role=Role(row.role),
        tenant=row.tenant,
        description=row.description,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )
