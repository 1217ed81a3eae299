"""The authorization server's rows: signing keys, revoked tokens and used client assertions.

Every write that gateways must see (a new or retired signing key, a revoked token) bumps the
identity change counter (:class:`portico.identity.store.IdentityChanges`) in the same
transaction; gateways poll that one value (see
:mod:`portico.identity.oauth.state`). Recording a client assertion's ``jti`` does not: replay is
decided by the primary key at insert time, in whichever process receives the assertion.

A signing key's private half is sealed (:mod:`portico.store.secrets`) before it is written and
opened when it is read: the database never holds it in plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from portico.identity.oauth.keys import SigningAlgorithm, SigningKey, load_private_pem, private_pem
from portico.identity.store import IdentityChanges
from portico.store.repositories import StoreBinding, _Repository
from portico.store.secrets import Secrets
from portico.store.secrets.stored import SealedColumn
from portico.store.tables import ClientAssertionJtiRow, RevokedTokenRow, SigningKeyRow, utc_now

__all__ = ["ClientAssertions", "KeyRotation", "RevokedTokens", "SigningKeys"]


def _insert_ignoring_duplicates(
    session: Session,
    table: type[RevokedTokenRow] | type[ClientAssertionJtiRow],
    jti: str,
    expires_at: datetime,
) -> bool:
    """Insert a ``(jti, expires_at)`` row; ``False`` when the ``jti`` was already there."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing()
        .returning(table.jti)
    )
    return session.execute(statement).first() is not None


SEALED_PRIVATE_KEY = SealedColumn.of(SigningKeyRow.__table__.c.sealed_private_key)


def _key(row: SigningKeyRow, secrets: Secrets) -> SigningKey:
    algorithm: SigningAlgorithm = "RS256" if row.algorithm == "RS256" else "EdDSA"
    pem = secrets.open(row.sealed_private_key, SEALED_PRIVATE_KEY.context(row.kid))
    return SigningKey(
        kid=row.kid,
        algorithm=algorithm,
        private_key=load_private_pem(pem.decode("ascii")),
        public_jwk=dict(row.public_jwk),
        created_at=row.created_at,
        activated_at=row.activated_at,
        retired_at=row.retired_at,
        expires_at=row.expires_at,
    )


@dataclass(frozen=True, slots=True)
class KeyRotation:
    created: SigningKey
    retired: tuple[SigningKey, ...]
    """The keys that signed until now; each stays published until its ``expires_at``."""


class SigningKeys(_Repository):
    """The signing keys of the authorization server, their private halves sealed with
    ``secrets``."""

    def __init__(self, binding: StoreBinding, secrets: Secrets) -> None:
        super().__init__(binding)
        self._secrets = secrets

    def published(self, now: datetime | None = None) -> list[SigningKey]:
        """Every key not yet dropped out (active and retired-but-published)."""
        now = now or utc_now()
        query = sa.select(SigningKeyRow).where(
            sa.or_(SigningKeyRow.expires_at.is_(None), SigningKeyRow.expires_at > now)
        )
        with self._transaction(write=False) as session:
            return [_key(row, self._secrets) for row in session.scalars(query)]

    def rotate(
        self,
        algorithm: SigningAlgorithm,
        publish_after_retirement: timedelta,
        *,
        only_if_needed: bool = False,
        now: datetime | None = None,
    ) -> KeyRotation | None:
        """Make a new key the signing key; the previous ones retire now and stay published for
        ``publish_after_retirement`` (longer than a token lives), then drop out.

        With ``only_if_needed`` nothing happens (``None``) when an active key of ``algorithm``
        exists already: that is how the first start creates a key, once, however many processes
        start together.
        """
        now = now or utc_now()
        key = SigningKey.generate(algorithm, now)  # before the transaction: RSA takes a while
        sealed = self._secrets.seal(
            private_pem(key.private_key).encode("ascii"), SEALED_PRIVATE_KEY.context(key.kid)
        )
        with self._transaction(write=True) as session:
            if session.get_bind().dialect.name == "postgresql":
                session.execute(sa.text("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE"))
            # Every key not retired, even one activated after ``now``: another process that
            # read the clock later may have committed its first key while this one made its own.
            active = list(
                session.scalars(
                    sa.select(SigningKeyRow)
                    .where(SigningKeyRow.retired_at.is_(None))
                    .order_by(SigningKeyRow.activated_at.desc())
                )
            )
            if only_if_needed and active and active[0].algorithm == algorithm:
                return None
            for row in active:
                row.retired_at = now
                row.expires_at = now + publish_after_retirement
            session.execute(
                sa.delete(SigningKeyRow).where(
                    SigningKeyRow.expires_at.is_not(None), SigningKeyRow.expires_at <= now
                )
            )
            session.add(
                SigningKeyRow(
                    kid=key.kid,
                    algorithm=key.algorithm,
                    sealed_private_key=sealed,
                    public_jwk=key.public_jwk,
                    created_at=now,
                    activated_at=now,
                )
            )
            IdentityChanges(session).bump()
            session.flush()
            return KeyRotation(key, tuple(_key(row, self._secrets) for row in active))


class RevokedTokens(_Repository):
    """Access tokens revoked before their expiry, by ``jti``."""

    def revoke(self, jti: str, until: datetime) -> bool:
        """Record the revocation; ``False`` when the token was revoked already."""
        with self._transaction(write=True) as session:
            added = _insert_ignoring_duplicates(session, RevokedTokenRow, jti, until)
            if added:
                IdentityChanges(session).bump()
            return added

    def current(self, now: datetime | None = None) -> dict[str, float]:
        """Revoked ``jti`` values that still matter, with when they stop mattering (epoch)."""
        now = now or utc_now()
        query = sa.select(RevokedTokenRow.jti, RevokedTokenRow.expires_at).where(
            RevokedTokenRow.expires_at > now
        )
        with self._transaction(write=False) as session:
            return {jti: expires.timestamp() for jti, expires in session.execute(query)}

    def purge(self, now: datetime | None = None) -> int:
        now = now or utc_now()
        with self._transaction(write=True) as session:
            result = session.execute(
                sa.delete(RevokedTokenRow).where(RevokedTokenRow.expires_at <= now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]


class ClientAssertions(_Repository):
    """The ``jti`` of every ``private_key_jwt`` assertion used, until the assertion expires."""

    def remember(self, jti: str, until: datetime) -> bool:
        """Record a first use; ``False`` when the assertion was used before (a replay)."""
        with self._transaction(write=True) as session:
            return _insert_ignoring_duplicates(session, ClientAssertionJtiRow, jti, until)

    def purge(self, now: datetime | None = None) -> int:
        now = now or utc_now()
        with self._transaction(write=True) as session:
            result = session.execute(
                sa.delete(ClientAssertionJtiRow).where(ClientAssertionJtiRow.expires_at <= now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]
