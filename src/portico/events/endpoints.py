"""Webhook endpoints and their signing secrets, in the store.

An endpoint belongs to one consumer (``tenant/consumer``), who manages it through the consumer API
on the gateway; operators manage every endpoint through the admin API, the CLI and the config
file (``events.endpoints``, synced here as ``ep_cfg_<name>``). Secrets are sealed at rest
(docs/secrets.md); a rotation keeps the previous secret signing beside the new one until the
overlap ends, so a receiver can switch at its own pace.
"""

from __future__ import annotations

import builtins
import secrets as random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portico.config.events import WebhookEndpoint
from portico.core.errors import PorticoError
from portico.events.signing import generate_secret
from portico.store.database import Database
from portico.store.secrets import Secrets
from portico.store.secrets.stored import SealedColumn
from portico.store.tables import DeliveryRow, EndpointSecretRow, WebhookEndpointRow

__all__ = [
    "CONFIG_PREFIX",
    "Endpoint",
    "Endpoints",
    "UnknownEndpoint",
    "new_endpoint_id",
]

CONFIG_PREFIX = "ep_cfg_"
"""The id prefix of the endpoints of the config file: the API refuses to change them."""

_SECRETS = SealedColumn.of(EndpointSecretRow.__table__.c.sealed_secret)
_ENDPOINTS: sa.Table = WebhookEndpointRow.__table__  # type: ignore[assignment]
_SECRET_ROWS: sa.Table = EndpointSecretRow.__table__  # type: ignore[assignment]


class UnknownEndpoint(PorticoError):
    """No endpoint of that id (or none the caller may see)."""


def new_endpoint_id() -> str:
    return "ep_" + random.token_hex(12)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    consumer: str
    tenant: str
    url: str
    description: str | None
    types: tuple[str, ...]
    filter: dict[str, Any] | None
    rate_limit: float | None
    concurrency: int | None
    ordering_key: str | None
    source: str
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def describe(self) -> dict[str, Any]:
        """The endpoint as the APIs show it (never its secret)."""
        return {
            "id": self.id,
            "consumer": self.consumer,
            "url": self.url,
            "description": self.description,
            "types": list(self.types),
            "filter": self.filter,
            "rate_limit": self.rate_limit,
            "concurrency": self.concurrency,
            "ordering": None if self.ordering_key is None else {"key": self.ordering_key},
            "source": self.source,
            "disabled": self.disabled_at is not None,
            "disabled_at": None if self.disabled_at is None else self.disabled_at.isoformat(),
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


_EDITABLE = frozenset(
    {"url", "description", "types", "filter", "rate_limit", "concurrency", "ordering_key"}
)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        consumer=row.consumer,
        tenant=row.tenant,
        url=row.url,
        description=row.description,
        types=tuple(row.types),
        filter=row.filter,
        rate_limit=row.rate_limit,
        concurrency=row.concurrency,
        ordering_key=row.ordering_key,
        source=row.source,
        disabled_at=_aware(row.disabled_at),
        disabled_reason=row.disabled_reason,
        created_at=_aware(row.created_at) or datetime.now(UTC),
        updated_at=_aware(row.updated_at) or datetime.now(UTC),
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Endpoints:
    """The endpoints of the store; each call is its own transaction, unless the endpoints are
    :meth:`bound` to a session (a caller's own transaction, e.g. with its audit entry)."""

    def __init__(self, database: Database, secrets: Secrets, session: Session | None = None):
        self.database = database
        self.secrets = secrets
        self._session = session

    def bound(self, session: Session) -> Endpoints:
        """The same endpoints, every call of which runs in ``session``'s transaction."""
        return Endpoints(self.database, self.secrets, session)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        if self._session is not None:
            yield self._session
        else:
            with self.database.read() as session:
                yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        if self._session is not None:
            yield self._session
        else:
            with self.database.write() as session:
                yield session

    # -- reading ---------------------------------------------------------------------------------

    def get(self, endpoint_id: str, consumer: str | None = None, *, lock: bool = False) -> Endpoint:
        """The endpoint ``endpoint_id`` (of ``consumer``, when given), else
        :class:`UnknownEndpoint`; ``lock``: its row locked until the transaction ends (bound to a
        caller's session: a condition checked on it holds when the change is made)."""
        query = sa.select(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id)
        if consumer is not None:
            query = query.where(WebhookEndpointRow.consumer == consumer)
        if lock:
            query = query.with_for_update()
        with self._read() as session:
            row = session.scalars(query).first()
            if row is None:
                raise UnknownEndpoint(f"no endpoint {endpoint_id!r}")
            return _endpoint(row)

    def list(
        self,
        *,
        consumer: str | None = None,
        tenant: str | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> builtins.list[Endpoint]:
        """Endpoints by id, after ``after`` (the previous page's last id)."""
        query = sa.select(WebhookEndpointRow).order_by(WebhookEndpointRow.id).limit(limit)
        if consumer is not None:
            query = query.where(WebhookEndpointRow.consumer == consumer)
        if tenant is not None:
            query = query.where(WebhookEndpointRow.tenant == tenant)
        if after is not None:
            query = query.where(WebhookEndpointRow.id > after)
        with self._read() as session:
            return [_endpoint(row) for row in session.scalars(query)]

    def signing_secrets(self, endpoint_id: str, now: datetime | None = None) -> builtins.list[str]:
        """The secrets that sign for the endpoint now: the current one first, then those still in
        their rotation overlap."""
        now = now or datetime.now(UTC)
        query = (
            sa.select(_SECRET_ROWS.c.id, _SECRET_ROWS.c.sealed_secret, _SECRET_ROWS.c.expires_at)
            .where(_SECRET_ROWS.c.endpoint_id == endpoint_id)
            .order_by(_SECRET_ROWS.c.id.desc())
        )
        with self._read() as session:
            rows = session.execute(query).all()
        opened = []
        for row in rows:
            expires = _aware(row.expires_at)
            if expires is not None and expires <= now:
                continue
            opened.append(self.secrets.open(row.sealed_secret, _SECRETS.context(row.id)).decode())
        return opened

    # -- writing ---------------------------------------------------------------------------------

    def create(
        self,
        consumer: str,
        url: str,
        *,
        types: Sequence[str] = ("*",),
        description: str | None = None,
        filter: Mapping[str, Any] | None = None,
        rate_limit: float | None = None,
        concurrency: int | None = None,
        ordering_key: str | None = None,
        source: str = "consumer",
        secret: str | None = None,
        endpoint_id: str | None = None,
        disabled: bool = False,
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its first secret (made here when ``secret`` is ``None``)."""
        now = datetime.now(UTC)
        secret = secret or generate_secret()
        row = WebhookEndpointRow(
            id=endpoint_id or new_endpoint_id(),
            consumer=consumer,
            tenant=consumer.split("/", 1)[0],
            url=url,
            description=description,
            types=list(types),
            filter=dict(filter) if filter is not None else None,
            rate_limit=rate_limit,
            concurrency=concurrency,
            ordering_key=ordering_key,
            source=source,
            disabled_at=now if disabled else None,
            disabled_reason="disabled by its owner" if disabled else None,
            created_at=now,
            updated_at=now,
        )
        with self._write() as session:
            session.add(row)
            session.flush()
            self._add_secret(session, row.id, secret)
            return _endpoint(row), secret

    def _add_secret(self, session: Any, endpoint_id: str, secret: str) -> None:
        secret_row = EndpointSecretRow(endpoint_id=endpoint_id, sealed_secret="")
        session.add(secret_row)
        session.flush()
        secret_row.sealed_secret = self.secrets.seal(
            secret.encode(), _SECRETS.context(secret_row.id)
        )

    def update(self, endpoint_id: str, changes: Mapping[str, Any]) -> Endpoint:
        unknown = set(changes) - _EDITABLE
        if unknown:
            raise ValueError(f"cannot change {', '.join(sorted(unknown))}")
        with self._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise UnknownEndpoint(f"no endpoint {endpoint_id!r}")
            for name, value in changes.items():
                setattr(row, name, list(value) if name == "types" else value)
            row.updated_at = datetime.now(UTC)
            session.flush()
            return _endpoint(row)

    def set_disabled(self, endpoint_id: str, reason: str | None) -> Endpoint:
        """Disable the endpoint (``reason``), or enable it again (``None``): its deliveries wait
        while it is disabled, and flow again when it is enabled."""
        with self._write() as session:
            row = session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise UnknownEndpoint(f"no endpoint {endpoint_id!r}")
            now = datetime.now(UTC)
            row.disabled_at = now if reason is not None else None
            row.disabled_reason = reason
            row.failing_since = None
            row.updated_at = now
            session.flush()
            return _endpoint(row)

    def delete(self, endpoint_id: str) -> None:
        """Remove the endpoint and its secrets; its pending deliveries are cancelled (kept in the
        delivery log until retention prunes them)."""
        with self._write() as session:
            deleted = session.execute(sa.delete(_ENDPOINTS).where(_ENDPOINTS.c.id == endpoint_id))
            if not deleted.rowcount:  # type: ignore[attr-defined]
                raise UnknownEndpoint(f"no endpoint {endpoint_id!r}")
            session.execute(
                sa.delete(_SECRET_ROWS).where(_SECRET_ROWS.c.endpoint_id == endpoint_id)
            )
            session.execute(
                sa.update(DeliveryRow)
                .where(DeliveryRow.endpoint_id == endpoint_id, DeliveryRow.status == "pending")
                .values(status="cancelled", claimed_until=None, claimed_by=None)
            )

    def rotate(self, endpoint_id: str, overlap: float, secret: str | None = None) -> str:
        """A new current secret; the previous ones keep signing for ``overlap`` seconds."""
        secret = secret or generate_secret()
        until = datetime.now(UTC) + timedelta(seconds=overlap)
        with self._write() as session:
            if session.get(WebhookEndpointRow, endpoint_id) is None:
                raise UnknownEndpoint(f"no endpoint {endpoint_id!r}")
            session.execute(
                sa.update(_SECRET_ROWS)
                .where(
                    _SECRET_ROWS.c.endpoint_id == endpoint_id,
                    sa.or_(_SECRET_ROWS.c.expires_at.is_(None), _SECRET_ROWS.c.expires_at > until),
                )
                .values(expires_at=until)
            )
            self._add_secret(session, endpoint_id, secret)
        return secret

    def sync_config(self, declared: Mapping[str, WebhookEndpoint]) -> None:
        """Make the store's config endpoints (``ep_cfg_<name>``) those of the file: created,
        changed (a new secret replaces the old at once), or removed."""
        present = {e.id: e for e in self.list() if e.id.startswith(CONFIG_PREFIX)}
        for name, spec in declared.items():
            endpoint_id = CONFIG_PREFIX + name
            values = {
                "url": spec.url,
                "description": spec.description,
                "types": list(spec.types),
                "filter": spec.filter,
                "rate_limit": spec.rate_limit,
                "concurrency": spec.concurrency,
                "ordering_key": None if spec.ordering is None else spec.ordering.key,
            }
            existing = present.pop(endpoint_id, None)
            if existing is None:
                self.create(
                    spec.consumer,
                    spec.url,
                    types=spec.types,
                    description=spec.description,
                    filter=spec.filter,
                    rate_limit=spec.rate_limit,
                    concurrency=spec.concurrency,
                    ordering_key=None if spec.ordering is None else spec.ordering.key,
                    source="config",
                    secret=spec.secret,
                    endpoint_id=endpoint_id,
                    disabled=spec.disabled,
                )
                continue
            changed = {
                key: value
                for key, value in values.items()
                if (list(existing.types) if key == "types" else getattr(existing, key)) != value
            }
            if changed:
                self.update(endpoint_id, changed)
            if spec.disabled != (not existing.enabled) and (
                spec.disabled or existing.disabled_reason == "disabled in the config"
            ):
                self.set_disabled(endpoint_id, "disabled in the config" if spec.disabled else None)
            if self.signing_secrets(endpoint_id)[:1] != [spec.secret]:
                self.rotate(endpoint_id, 0.0, spec.secret)
        for endpoint_id in present:
            self.delete(endpoint_id)
