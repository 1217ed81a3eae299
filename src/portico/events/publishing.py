"""Publishing an event: checked against its type's schema, committed with one delivery per
subscribed endpoint in one transaction, before the publisher is answered.

The same :class:`Publisher` serves every way in (the consumer API on the gateway, the admin API,
the ``publish`` route policy, inbound webhooks, Portico's operational events and a Python call
for flows). An ``Idempotency-Key`` (or an event id given by the publisher) already seen for that
publisher returns the original event, not a duplicate.
"""

from __future__ import annotations

import json
import secrets as random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from portico.events.catalog import EventCatalog
from portico.events.matching import (
    PayloadFilter,
    compile_filter,
    field_value,
    is_missing,
    type_matches,
)
from portico.events.wakeup import notify_workers
from portico.store.database import Database
from portico.store.tables import DeliveryRow, EventRow, WebhookEndpointRow

__all__ = ["Published", "Publisher", "envelope_bytes", "new_event_id"]

_EVENTS: sa.Table = EventRow.__table__  # type: ignore[assignment]
_ENDPOINTS: sa.Table = WebhookEndpointRow.__table__  # type: ignore[assignment]
_DELIVERIES: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]


def new_event_id() -> str:
    """``msg_`` and 24 random hex digits, as Standard Webhooks' examples name messages."""
    return "msg_" + random.token_hex(12)


def envelope_bytes(event_type: str, timestamp: datetime, data: Any) -> str:
    """The body every endpoint receives: ``{"type", "timestamp", "data"}`` (Standard Webhooks'
    payload structure), made once, stored, and signed as it is sent."""
    stamp = timestamp.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"type": event_type, "timestamp": stamp, "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass(frozen=True, slots=True)
class Published:
    id: str
    type: str
    timestamp: datetime
    created: bool
    """``False``: the idempotency key was seen before, and this is the original event."""
    deliveries: int
    """Deliveries queued by this publish (0 for a repeated one)."""

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "timestamp": self.timestamp.isoformat()}


class Publisher:
    """Publishes into one store; ``catalog`` gives the current catalog (it changes with the
    config), ``published`` is told after each commit (the in-process dispatcher wakes up)."""

    def __init__(
        self,
        database: Database,
        catalog: Callable[[], EventCatalog],
        published: Callable[[], None] | None = None,
        first_delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.database = database
        self.catalog = catalog
        self.published = published
        self.first_delay = first_delay
        self._filters: dict[tuple[str, str], PayloadFilter] = {}

    def publish(
        self,
        event_type: str,
        data: Any,
        *,
        publisher: str,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        internal: bool = False,
    ) -> Published:
        """Check and commit the event and its deliveries; raise the catalog's errors for what
        cannot be published (nothing is stored then)."""
        self.catalog().check(event_type, data, internal=internal)
        # A key seen before is found by the insert's unique constraint rather than a read first:
        # a repeated key is the rare case, and the read cost every keyed publish a third of its
        # time (bench/webhooks.py's publishing, commit message).
        now = datetime.now(UTC)
        event_id = new_event_id()
        payload = envelope_bytes(event_type, now, data)
        envelope = {"type": event_type, "data": data}
        try:
            with self.database.write() as session:
                session.execute(
                    _EVENTS.insert().values(
                        id=event_id,
                        type=event_type,
                        tenant=tenant,
                        publisher=publisher,
                        idempotency_key=idempotency_key,
                        payload=payload,
                        created_at=now,
                    )
                )
                rows = self._deliveries(session, event_id, event_type, tenant, envelope, now)
                if rows:
                    session.execute(_DELIVERIES.insert(), rows)
                    notify_workers(session)
        except IntegrityError:
            # Another publish with the same key committed first: that one is the event.
            if idempotency_key is not None:
                seen = self._seen(publisher, idempotency_key)
                if seen is not None:
                    return seen
            raise
        if self.published is not None:
            self.published()
        return Published(event_id, event_type, now, True, len(rows))

    def _seen(self, publisher: str, key: str) -> Published | None:
        query = sa.select(_EVENTS.c.id, _EVENTS.c.type, _EVENTS.c.created_at).where(
            _EVENTS.c.publisher == publisher, _EVENTS.c.idempotency_key == key
        )
        with self.database.read() as session:
            row = session.execute(query).first()
        if row is None:
            return None
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return Published(row.id, row.type, created, False, 0)

    def _deliveries(
        self,
        session: Any,
        event_id: str,
        event_type: str,
        tenant: str | None,
        envelope: dict[str, Any],
        now: datetime,
    ) -> list[dict[str, Any]]:
        query = sa.select(
            _ENDPOINTS.c.id,
            _ENDPOINTS.c.types,
            _ENDPOINTS.c.filter,
            _ENDPOINTS.c.ordering_key,
            _ENDPOINTS.c.updated_at,
        ).where(_ENDPOINTS.c.disabled_at.is_(None))
        if tenant is not None:
            query = query.where(_ENDPOINTS.c.tenant == tenant)
        epoch = now.timestamp()
        due = epoch + self.first_delay()
        rows = []
        for endpoint in session.execute(query):
            if not type_matches(endpoint.types, event_type):
                continue
            if endpoint.filter is not None and not self._filter(endpoint).matches(envelope):
                continue
            rows.append(
                {
                    "event_id": event_id,
                    "endpoint_id": endpoint.id,
                    "status": "pending",
                    "ordering_key": _ordering_key(endpoint.ordering_key, envelope),
                    "attempts": 0,
                    "due": due,
                    "published_at": epoch,
                }
            )
        return rows

    def _filter(self, endpoint: Any) -> PayloadFilter:
        key = (endpoint.id, str(endpoint.updated_at))
        compiled = self._filters.get(key)
        if compiled is None:
            if len(self._filters) > 10_000:
                self._filters.clear()
            compiled = self._filters[key] = compile_filter(endpoint.filter)
        return compiled


def _ordering_key(setting: str | None, envelope: dict[str, Any]) -> str | None:
    if setting is None:
        return None
    if setting == "endpoint":
        return ""
    value = field_value(envelope, setting)
    if is_missing(value):
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
