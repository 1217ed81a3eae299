"""Publishing an event: checked against its type's schema, committed with one delivery per
subscribed endpoint in one transaction, before the publisher is answered.

The same :class:`Publisher` serves every way in (the consumer API on the gateway, the admin API,
the ``publish`` route policy, inbound webhooks, Portico's operational events and a Python call
for flows). An ``Idempotency-Key`` (or an event id given by the publisher) already seen for that
publisher returns the original event, not a duplicate.

A publish is one short write transaction of two statements: the event's insert, which also reads
the endpoint change counter (``webhook_endpoint_changes``, moved by database triggers with every
change to who receives what), and one insert of its deliveries. The subscribed endpoints, their
compiled payload filters and which of them take each event type, are kept in memory and read
again, in the same transaction, only when the counter moved: an endpoint created, changed,
disabled or deleted by any process receives, or stops receiving, the events published after
that change committed.
"""

from __future__ import annotations

import contextlib
import json
import secrets as random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from portico.events.catalog import EventCatalog
from portico.events.matching import (
    FilterError,
    PayloadFilter,
    compile_filter,
    field_value,
    is_missing,
    type_matches,
)
from portico.events.wakeup import Notifier
from portico.store.database import Database, DatabaseUnavailable, write_engine
from portico.store.tables import (
    DeliveryRow,
    EventRow,
    UTCDateTime,
    WebhookEndpointChangeRow,
    WebhookEndpointRow,
)

__all__ = ["Published", "Publisher", "envelope_bytes", "new_event_id"]

_EVENTS: sa.Table = EventRow.__table__  # type: ignore[assignment]
_ENDPOINTS: sa.Table = WebhookEndpointRow.__table__  # type: ignore[assignment]
_DELIVERIES: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
_CHANGES: sa.Table = WebhookEndpointChangeRow.__table__  # type: ignore[assignment]

# Built once: SQLAlchemy then finds each compiled statement in its cache by a cheap key, where
# a statement built per publish (``insert().values(...)``) cost a third of the publish to key.
_INSERT_EVENT = _EVENTS.insert().returning(
    sa.select(_CHANGES.c.version).where(_CHANGES.c.id == 1).scalar_subquery()
)
_INSERT_DELIVERIES = _DELIVERIES.insert()
_SUBSCRIBERS = sa.select(
    _ENDPOINTS.c.id,
    _ENDPOINTS.c.tenant,
    _ENDPOINTS.c.types,
    _ENDPOINTS.c.filter,
    _ENDPOINTS.c.ordering_key,
).where(_ENDPOINTS.c.disabled_at.is_(None))

# PostgreSQL: the whole publish as one statement in autocommit, one round trip where a
# transaction costs three (``BEGIN``, the statements, ``COMMIT``), when the endpoints kept in
# memory are current: the event is inserted only if the change counter still reads the version
# they were read at, and the deliveries only with the event. ``inserted`` 0: the counter moved
# (or its row is missing) and nothing was written; the publish is made again as a transaction.
_PUBLISH_AT_ONCE = sa.text("""
WITH counter AS (SELECT version FROM webhook_endpoint_changes WHERE id = 1),
event AS (
  INSERT INTO events (id, type, tenant, publisher, idempotency_key, payload, created_at)
  SELECT CAST(:id AS text), CAST(:type AS text), CAST(:tenant AS text),
    CAST(:publisher AS text), CAST(:idempotency_key AS text), CAST(:payload AS text),
    CAST(:created_at AS timestamptz)
  FROM counter WHERE counter.version = CAST(:version AS bigint)
  RETURNING id
),
queued AS (
  INSERT INTO webhook_deliveries (event_id, endpoint_id, status, ordering_key, attempts, due,
    published_at)
  SELECT event.id, r.endpoint_id, 'pending', r.ordering_key, 0,
    CAST(:due AS double precision), CAST(:published_at AS double precision)
  FROM event, json_to_recordset(CAST(:rows AS json)) AS r(endpoint_id text, ordering_key text)
)
SELECT count(*) AS inserted FROM event
""").bindparams(sa.bindparam("created_at", type_=UTCDateTime()))
_EVENT_STORED = sa.select(_EVENTS.c.id).where(_EVENTS.c.id == sa.bindparam("id"))

MATCHES_KEPT = 10_000
"""At most this many (tenant, event type) pairs remembered per read of the endpoints."""


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


@dataclass(frozen=True, slots=True)
class _Subscriber:
    id: str
    tenant: str
    types: tuple[str, ...]
    filter: PayloadFilter | FilterError | None
    """Compiled; a stored filter that does not compile (written around the APIs, which refuse
    it) fails the publishes it would have to judge, as it did when compiled per publish."""
    ordering_key: str | None

    def takes(self, envelope: dict[str, Any]) -> bool:
        payload_filter = self.filter
        if payload_filter is None:
            return True
        if isinstance(payload_filter, FilterError):
            raise payload_filter
        return payload_filter.matches(envelope)


class _Subscribers:
    """The enabled endpoints as read at one ``version`` of the endpoint change counter (``None``:
    the counter's row is missing, and the endpoints are read at every publish)."""

    __slots__ = ("_by_type", "all", "version")

    def __init__(self, version: int | None, rows: Any) -> None:
        self.version = version
        self.all = [
            _Subscriber(
                row.id, row.tenant, tuple(row.types), _compiled(row.filter), row.ordering_key
            )
            for row in rows
        ]
        self._by_type: dict[tuple[str | None, str], tuple[_Subscriber, ...]] = {}

    def of(self, tenant: str | None, event_type: str) -> tuple[_Subscriber, ...]:
        """Those whose type filter takes ``event_type``: of ``tenant``, or all for a platform
        event (``None``)."""
        key = (tenant, event_type)
        found = self._by_type.get(key)
        if found is None:
            found = tuple(
                subscriber
                for subscriber in self.all
                if (tenant is None or subscriber.tenant == tenant)
                and type_matches(subscriber.types, event_type)
            )
            if len(self._by_type) < MATCHES_KEPT:
                self._by_type[key] = found
        return found


def _compiled(source: Any) -> PayloadFilter | FilterError | None:
    if source is None:
        return None
    try:
        return compile_filter(source)
    except FilterError as exc:
        return exc


class Publisher:
    """Publishes into one store; ``catalog`` gives the current catalog (it changes with the
    config), ``published`` is told after each commit (the in-process dispatcher wakes up).

    Safe to call from several threads at once (the gateway publishes from a thread pool)."""

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
        self._engine = write_engine(database.engine)
        # SQLite has one writer; a connection that finds it busy sleeps and polls (1, 2, 5, 10...
        # ms), so this process's publishing threads queue here instead, woken in turn.
        self._turn: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if database.backend == "sqlite" else contextlib.nullcontext()
        )
        self._subscribers = _Subscribers(None, ())
        postgresql = database.backend == "postgresql"
        # The delivering processes of PostgreSQL are woken after each commit (SQLite's: by
        # ``published`` in this process, by their polling in the others).
        self._notifier = Notifier(database) if postgresql else None
        self._at_once = (
            database.engine.execution_options(isolation_level="AUTOCOMMIT") if postgresql else None
        )

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
        event = {
            "id": event_id,
            "type": event_type,
            "tenant": tenant,
            "publisher": publisher,
            "idempotency_key": idempotency_key,
            "payload": envelope_bytes(event_type, now, data),
            "created_at": now,
        }
        envelope = {"type": event_type, "data": data}
        try:
            rows = self._publish_at_once(event, tenant, envelope, now)
            if rows is None:
                rows = self._publish_in_transaction(event, tenant, envelope, now)
        except IntegrityError:
            # Another publish with the same key committed first: that one is the event.
            if idempotency_key is not None:
                seen = self._seen(publisher, idempotency_key)
                if seen is not None:
                    return seen
            raise
        self._committed(rows)
        return Published(event_id, event_type, now, True, len(rows))

    def _publish_in_transaction(
        self, event: dict[str, Any], tenant: str | None, envelope: dict[str, Any], now: datetime
    ) -> list[dict[str, Any]]:
        with self._turn, self._engine.begin() as connection:
            version = connection.execute(_INSERT_EVENT, event).scalar()
            subscribers = self._current(connection, version)
            rows = self._deliveries(
                subscribers.of(tenant, event["type"]), event["id"], envelope, now
            )
            if rows:
                connection.execute(_INSERT_DELIVERIES, rows)
            # Whatever must commit with the event and its deliveries goes here (and in
            # ``_PUBLISH_AT_ONCE``).
        return rows

    def _committed(self, rows: list[dict[str, Any]]) -> None:
        if rows and self._notifier is not None:
            self._notifier.published()
        if self.published is not None:
            self.published()

    def _publish_at_once(
        self, event: dict[str, Any], tenant: str | None, envelope: dict[str, Any], now: datetime
    ) -> list[dict[str, Any]] | None:
        """The publish as one statement (PostgreSQL), with the endpoints kept in memory: the
        deliveries queued, or ``None`` when it must be made as a transaction (SQLite; nothing
        read yet; the endpoints changed since; a kept filter that does not compile, which the
        endpoints read again may not have).

        A connection lost during the statement (the server restarted or terminated it) leaves
        unknown whether it committed: it is sent once more on a new connection, with the same
        event id, whose primary key then tells."""
        kept = self._subscribers
        if self._at_once is None or kept.version is None:
            return None
        try:
            rows = self._deliveries(kept.of(tenant, event["type"]), event["id"], envelope, now)
        except FilterError:
            return None
        parameters = {
            **event,
            "version": kept.version,
            "due": rows[0]["due"] if rows else 0.0,
            "published_at": now.timestamp(),
            "rows": json.dumps(
                [
                    {"endpoint_id": row["endpoint_id"], "ordering_key": row["ordering_key"]}
                    for row in rows
                ],
                separators=(",", ":"),
            ),
        }
        try:
            inserted = self._execute_at_once(parameters)
        except DatabaseUnavailable as exc:
            if not exc.connection_lost:
                raise
            try:
                inserted = self._execute_at_once(parameters)
            except IntegrityError:
                if not self._stored(event["id"]):
                    raise
                inserted = 1  # the first one committed
        return rows if inserted else None

    def _execute_at_once(self, parameters: dict[str, Any]) -> int:
        assert self._at_once is not None
        with self._at_once.connect() as connection:
            return int(connection.execute(_PUBLISH_AT_ONCE, parameters).scalar_one())

    def _stored(self, event_id: str) -> bool:
        with self._engine.connect() as connection:
            return connection.execute(_EVENT_STORED, {"id": event_id}).first() is not None

    def _current(self, connection: sa.Connection, version: int | None) -> _Subscribers:
        """The enabled endpoints at ``version``: those kept, or read now in the publish's
        transaction when the counter moved since they were read."""
        kept = self._subscribers
        if version is not None and kept.version == version:
            return kept
        # Read after the counter: what is read is at least as new as ``version`` says, so a
        # change committed in between makes the next publish read again, never miss it.
        fresh = _Subscribers(version, connection.execute(_SUBSCRIBERS))
        if version is not None:
            self._subscribers = fresh
        return fresh

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
        subscribers: tuple[_Subscriber, ...],
        event_id: str,
        envelope: dict[str, Any],
        now: datetime,
    ) -> list[dict[str, Any]]:
        if not subscribers:
            return []
        epoch = now.timestamp()
        due = epoch + self.first_delay()
        return [
            {
                "event_id": event_id,
                "endpoint_id": subscriber.id,
                "status": "pending",
                "ordering_key": _ordering_key(subscriber.ordering_key, envelope),
                "attempts": 0,
                "due": due,
                "published_at": epoch,
            }
            for subscriber in subscribers
            if subscriber.takes(envelope)
        ]


def _ordering_key(setting: str | None, envelope: dict[str, Any]) -> str | None:
    if setting is None:
        return None
    if setting == "endpoint":
        return ""
    value = field_value(envelope, setting)
    if is_missing(value):
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
