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

__all__ = [
    "SEALED",
    "AdminTokenRow",
    "ApiKeyRow",
    "AuditLogRow",
    "Base",
    "ClientAssertionJtiRow",
    "ConfigRevisionRow",
    "IdentityChangeRow",
    "RevokedTokenRow",
    "SigningKeyRow",
    "StateRevisionRow",
    "UTCDateTime",
    "metadata",
]

# Deterministic constraint names: SQLite batch migrations and PostgreSQL ALTERs both need them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SEALED = "portico_sealed"
"""The key of a column's ``info`` that marks it as holding sealed secrets
(:mod:`portico.store.secrets`); the value says what they protect. Rotation, ``portico secrets
status`` and the start-up check find every such column of this module by it."""

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
    actor_role: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """The role of the admin token that made the change (``None``: the command line)."""
    tenant: Mapped[str | None] = mapped_column(sa.Text, nullable=True, index=True)
    """The tenant of the entity changed, when it belongs to one: what a tenant's token may read."""
    request_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    before_state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    """The entity before the change, secrets redacted (``None``: it did not exist)."""
    after_state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    """The entity after the change, secrets redacted (``None``: it no longer exists)."""


# -- identity and access (issue 3) ---------------------------------------------------------------


class ApiKeyRow(Base):
    """An API key made with ``portico keys create``: only the SHA-256 of the key is kept."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    """The visible key id, the ``<id>`` of ``pk_<id>_<secret>``."""
    consumer: Mapped[str] = mapped_column(sa.Text, index=True)
    """``tenant/consumer``."""
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotated_to: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """The id of the key that replaced this one; it keeps working until ``overlap_until``."""
    overlap_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class IdentityChangeRow(Base):
    """One row whose ``version`` every identity write increments in its own transaction.

    Gateways poll this single value and reload identity data when it moves. A counter updated in
    place, rather than an appended sequence, cannot be missed: PostgreSQL sequence values can
    commit out of order, so a poller could see id 5 before id 4 commits and never look again.
    """

    __tablename__ = "identity_changes"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class SigningKeyRow(Base):
    """A signing key of the OAuth 2.0 authorization server, its private half sealed."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    algorithm: Mapped[str] = mapped_column(sa.Text)
    sealed_private_key: Mapped[str] = mapped_column(sa.Text, info={SEALED: "OAuth signing keys"})
    """The PKCS #8 PEM of the private key, sealed for ``signing_keys.sealed_private_key/<kid>``."""
    public_jwk: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RevokedTokenRow(Base):
    """An access token revoked before its expiry (RFC 7009), kept until it would have expired."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ClientAssertionJtiRow(Base):
    """The ``jti`` of a ``private_key_jwt`` client assertion already used (RFC 7523 replay)."""

    __tablename__ = "client_assertion_jtis"

    jti: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# -- control plane (issue 11) --------------------------------------------------------------------


class AdminTokenRow(Base):
    """A token of the admin API (``portico admin tokens create``): only its SHA-256 is kept."""

    __tablename__ = "admin_tokens"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    """The visible token id, the ``<id>`` of ``padm_<id>_<secret>``."""
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))
    role: Mapped[str] = mapped_column(sa.Text)
    """``viewer``, ``operator`` or ``admin``."""
    tenant: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """The one tenant the token sees, or ``None`` for every tenant."""
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    created_by: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StateRevisionRow(Base):
    """One version of the served entities (``entities.source: store``, docs/sync.md): services,
    routes and tenants as written, ``${VAR}`` references kept (each process interpolates them
    from its own environment). Appended, never changed; the latest is served.

    ``parent_id`` is the revision a write was based on: unique, so that two writes based on the
    same revision cannot both land (the second is a lost update, refused)."""

    __tablename__ = "state_revisions"
    __table_args__ = (sa.UniqueConstraint("parent_id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    parent_id: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    actor: Mapped[str] = mapped_column(sa.Text)
    actor_role: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    request_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    source: Mapped[str] = mapped_column(sa.Text)
    """``seed`` (the file, at the first ``serve``), ``apply`` or ``admin``."""
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    sha256: Mapped[str] = mapped_column(sa.CHAR(64))


# -- events and webhooks (issue 12) --------------------------------------------------------------

EpochSeconds = sa.Float(precision=53)
"""A point in time as seconds since the epoch: the queue's own clock columns, compared and
ordered in every claim, cheaper than timestamps on both backends."""


class EventRow(Base):
    """A published event, committed before the publisher is answered 202."""

    __tablename__ = "events"
    __table_args__ = (sa.UniqueConstraint("publisher", "idempotency_key"),)

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    """``msg_…``: the ``webhook-id`` of every delivery of the event."""
    type: Mapped[str] = mapped_column(sa.Text, index=True)
    tenant: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """The publisher's tenant: only that tenant's endpoints receive it (``None``: a platform
    event, for every subscribed endpoint)."""
    publisher: Mapped[str] = mapped_column(sa.Text)
    """``consumer:acme/billing``, ``admin:<token id>``, ``route:<name>``, ``inbound:<name>``..."""
    idempotency_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    payload: Mapped[str] = mapped_column(sa.Text)
    """The exact body every endpoint receives (and whose bytes are signed):
    ``{"type", "timestamp", "data"}``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)


class WebhookEndpointRow(Base):
    """Where a consumer receives the events it subscribed to."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    """``ep_…`` (``ep_cfg_<name>`` for an endpoint of the config file)."""
    consumer: Mapped[str] = mapped_column(sa.Text, index=True)
    """``tenant/consumer``: the owner."""
    tenant: Mapped[str] = mapped_column(sa.Text, index=True)
    url: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    types: Mapped[list[str]] = mapped_column(sa.JSON)
    filter: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, nullable=True)
    rate_limit: Mapped[float | None] = mapped_column(sa.Float, nullable=True)
    concurrency: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    ordering_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """``endpoint`` or a payload path (``data.order_id``): FIFO per key; ``None``: no order."""
    source: Mapped[str] = mapped_column(sa.Text)
    """``config`` (the file's ``events.endpoints``), ``consumer`` or ``admin``."""
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    failing_since: Mapped[float | None] = mapped_column(EpochSeconds, nullable=True)
    """When the first of the failures since the last success happened."""
    rate_tat: Mapped[float | None] = mapped_column(EpochSeconds, nullable=True)
    """The rate limit's state, shared by every delivering process: the theoretical arrival time
    of the next delivery (GCRA, events/limits.py)."""
    held: Mapped[list[int] | None] = mapped_column(sa.JSON, nullable=True)
    """The deliveries admitted under the concurrency, some perhaps recorded since (the claim
    that admits more counts those still held, events/limits.py)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class WebhookEndpointChangeRow(Base):
    """One row whose ``version`` moves with every change to who receives what: a row of
    ``webhook_endpoints`` inserted or deleted, or its ``id``, ``tenant``, ``types``, ``filter``,
    ``ordering_key`` or ``disabled_at`` updated.

    Database triggers (migration 0007) increment it in the transaction of the change, whichever
    code or process makes it (the endpoint APIs, a delivering process disabling an endpoint, an
    operator's SQL), so a publisher that keeps the subscribed endpoints in memory checks this one
    value as it publishes and reads them again only when it moved.
    """

    __tablename__ = "webhook_endpoint_changes"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(sa.BigInteger)


class EndpointSecretRow(Base):
    """A signing secret of an endpoint, sealed; two sign together during a rotation overlap."""

    __tablename__ = "webhook_endpoint_secrets"

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(sa.Text, index=True)
    sealed_secret: Mapped[str] = mapped_column(sa.Text, info={SEALED: "webhook signing secrets"})
    """``whsec_…`` or ``whsk_…``, sealed for ``webhook_endpoint_secrets.sealed_secret/<id>``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """The end of the overlap after a rotation; ``None`` while it is the current secret."""


class DeliveryRow(Base):
    """One event for one endpoint: the unit of the queue, retried until it succeeds or dies."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_due", "status", "due"),
        sa.Index("ix_webhook_deliveries_fifo", "endpoint_id", "ordering_key", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    """Increasing in publishing order: FIFO endpoints deliver each key's rows in this order."""
    event_id: Mapped[str] = mapped_column(sa.Text, index=True)
    endpoint_id: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text)
    """``pending`` (waiting or in flight), ``succeeded``, ``dead`` or ``cancelled``."""
    ordering_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    due: Mapped[float] = mapped_column(EpochSeconds)
    """When the next attempt may be made."""
    claimed_until: Mapped[float | None] = mapped_column(EpochSeconds, nullable=True)
    """Set while a process holds the delivery; past it, another process may take it."""
    claimed_by: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    published_at: Mapped[float] = mapped_column(EpochSeconds)
    first_attempt_at: Mapped[float | None] = mapped_column(EpochSeconds, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(EpochSeconds, nullable=True, index=True)
    last_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class AttemptRow(Base):
    """One attempt at a delivery, as the delivery log shows it."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigIntegerKey, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    endpoint_id: Mapped[str] = mapped_column(sa.Text, index=True)
    event_id: Mapped[str] = mapped_column(sa.Text)
    attempt: Mapped[int] = mapped_column(sa.Integer)
    at: Mapped[float] = mapped_column(EpochSeconds, index=True)
    status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    response_headers: Mapped[list[list[str]]] = mapped_column(sa.JSON)
    response_body: Mapped[str] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    """The error class when there was no usable answer (``timeout``, ``private-address``...)."""
    outcome: Mapped[str] = mapped_column(sa.Text)
    """``succeeded``, ``retrying``, ``dead`` or ``disabled`` (a 410)."""


class InboundMessageRow(Base):
    """A webhook received from a third party: its id, kept to drop a redelivered copy."""

    __tablename__ = "inbound_webhooks"

    source: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    message_id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
