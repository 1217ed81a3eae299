"""The delivery log as its readers see it: events, deliveries and attempts, filtered and paged.

The consumer API shows a consumer its own endpoints' deliveries; the admin API and the CLI show
an operator every one (or a tenant's). Pages are keyed by id (``after``: the last id of the
previous page), newest first for deliveries and events, in attempt order for attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from portico.store.database import Database
from portico.store.tables import AttemptRow, DeliveryRow, EventRow, WebhookEndpointRow

__all__ = ["DeliveryFilter", "DeliveryLog"]

_D: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
_A: sa.Table = AttemptRow.__table__  # type: ignore[assignment]
_E: sa.Table = EventRow.__table__  # type: ignore[assignment]
_EP: sa.Table = WebhookEndpointRow.__table__  # type: ignore[assignment]

STATUSES = ("pending", "succeeded", "dead", "cancelled")


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    endpoint_id: str | None = None
    consumer: str | None = None
    """Only the deliveries to this consumer's endpoints (``tenant/consumer``)."""
    tenant: str | None = None
    status: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    since: float | None = None
    """Published at or after (epoch seconds)."""
    until: float | None = None
    """Published before."""


class DeliveryLog:
    def __init__(self, database: Database) -> None:
        self.database = database

    def deliveries(
        self, where: DeliveryFilter, *, after: int | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(
                _D,
                _E.c.type.label("event_type"),
                _EP.c.consumer.label("endpoint_consumer"),
            )
            .join(_E, _E.c.id == _D.c.event_id)
            .outerjoin(_EP, _EP.c.id == _D.c.endpoint_id)
            .order_by(_D.c.id.desc())
            .limit(limit)
        )
        if where.endpoint_id is not None:
            query = query.where(_D.c.endpoint_id == where.endpoint_id)
        if where.consumer is not None:
            query = query.where(_EP.c.consumer == where.consumer)
        if where.tenant is not None:
            query = query.where(_EP.c.tenant == where.tenant)
        if where.status is not None:
            query = query.where(_D.c.status == where.status)
        if where.event_id is not None:
            query = query.where(_D.c.event_id == where.event_id)
        if where.event_type is not None:
            query = query.where(_E.c.type == where.event_type)
        if where.since is not None:
            query = query.where(_D.c.published_at >= where.since)
        if where.until is not None:
            query = query.where(_D.c.published_at < where.until)
        if after is not None:
            query = query.where(_D.c.id < after)
        with self.database.read() as session:
            return [_delivery(row) for row in session.execute(query)]

    def delivery(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery, with its endpoint's owner (``consumer``) and tenant, or ``None``."""
        query = (
            sa.select(
                _D,
                _E.c.type.label("event_type"),
                _EP.c.consumer.label("endpoint_consumer"),
            )
            .join(_E, _E.c.id == _D.c.event_id)
            .outerjoin(_EP, _EP.c.id == _D.c.endpoint_id)
            .where(_D.c.id == delivery_id)
        )
        with self.database.read() as session:
            row = session.execute(query).first()
        return None if row is None else _delivery(row)

    def attempts(self, delivery_id: int) -> list[dict[str, Any]]:
        query = sa.select(_A).where(_A.c.delivery_id == delivery_id).order_by(_A.c.id)
        with self.database.read() as session:
            return [
                {
                    "id": row.id,
                    "attempt": row.attempt,
                    "at": _iso(row.at),
                    "status": row.status,
                    "latency_ms": row.latency_ms,
                    "response_headers": row.response_headers,
                    "response_body": row.response_body,
                    "error": row.error,
                    "outcome": row.outcome,
                }
                for row in session.execute(query)
            ]

    def event(self, event_id: str) -> dict[str, Any] | None:
        query = sa.select(_E).where(_E.c.id == event_id)
        with self.database.read() as session:
            row = session.execute(query).first()
        if row is None:
            return None
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return {
            "id": row.id,
            "type": row.type,
            "tenant": row.tenant,
            "publisher": row.publisher,
            "created_at": created.isoformat(),
            "payload": row.payload,
        }


def _delivery(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "endpoint_id": row.endpoint_id,
        "consumer": row.endpoint_consumer,
        "status": row.status,
        "attempts": row.attempts,
        "ordering_key": row.ordering_key,
        "published_at": _iso(row.published_at),
        "first_attempt_at": _iso(row.first_attempt_at),
        "next_attempt_at": _iso(row.due) if row.status == "pending" else None,
        "finished_at": _iso(row.finished_at),
        "last_status": row.last_status,
        "last_error": row.last_error,
    }
