"""The delivery queue: deliveries claimed by the processes that send them, their attempts
recorded, dead ones redelivered, old ones pruned.

A claim marks rows as held by one process until ``claimed_until``; a process that dies holds
them only until then, after which any process claims them again (at least once: the receiver
may see a message twice, always with the same ``webhook-id``). On PostgreSQL the claim is
``FOR UPDATE SKIP LOCKED``, so any number of processes on any number of machines claim side by
side; on SQLite every claim is a write transaction, and SQLite's single writer serialises them.

FIFO endpoints: a delivery with an ordering key is claimable only when no earlier delivery of the
same endpoint and key is still pending, so a key's messages go one at a time, in publishing
order, each waiting until the previous has succeeded or died.

An endpoint's rate limit and concurrency are decided in the claim's transaction
(:mod:`portico.events.limits`): what they do not admit is given back there, due later, so they
hold across every process and machine, and a claim the process got is a delivery it may send.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from portico.events.limits import admit
from portico.events.wakeup import notify_workers
from portico.store.database import Database
from portico.store.tables import (
    AttemptRow,
    DeliveryRow,
    EventRow,
    InboundMessageRow,
    WebhookEndpointRow,
)

__all__ = ["Claim", "Claimed", "DeliveryQueue", "Outcome", "QueueDepth"]

_D: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]
_A: sa.Table = AttemptRow.__table__  # type: ignore[assignment]
_E: sa.Table = EventRow.__table__  # type: ignore[assignment]
_EP: sa.Table = WebhookEndpointRow.__table__  # type: ignore[assignment]

_CLAIM = """
UPDATE webhook_deliveries SET claimed_until = :until, claimed_by = :me
WHERE id IN (
  SELECT d.id FROM webhook_deliveries d
  WHERE d.status = 'pending' AND d.due <= :now
    AND (d.claimed_until IS NULL OR d.claimed_until < :now)
    AND d.endpoint_id NOT IN (
      SELECT e.id FROM webhook_endpoints e WHERE e.disabled_at IS NOT NULL)
    AND (d.ordering_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM webhook_deliveries p
      WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key
        AND p.status = 'pending' AND p.id < d.id))
  ORDER BY d.due, d.id
  LIMIT :limit{lock}
)
RETURNING id, event_id, endpoint_id, attempts, published_at{returning}
"""
_RETURNING_MORE = """,
  (SELECT ev.payload FROM events ev WHERE ev.id = webhook_deliveries.event_id) AS payload,
  (SELECT CASE WHEN e.rate_limit IS NULL AND e.concurrency IS NULL THEN 0 ELSE 1 END
   FROM webhook_endpoints e WHERE e.id = webhook_deliveries.endpoint_id) AS limited"""
# SQLite plans a correlated subquery of RETURNING as a scan of its table (3.40: "SCAN ev"),
# once per row returned: a claim's CPU grew with the events kept. There, the payloads and the
# limits are read by a second statement of the claim's transaction, through the keys' indexes.
_CLAIMED_MORE = """
SELECT d.id, ev.payload AS payload,
  CASE WHEN e.rate_limit IS NULL AND e.concurrency IS NULL THEN 0 ELSE 1 END AS limited
FROM webhook_deliveries d
  LEFT JOIN events ev ON ev.id = d.event_id
  LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
WHERE d.id IN :ids
"""


# PostgreSQL: a batch's attempts and deliveries as one statement each, the rows passed as one
# JSON document (one parameter whatever the batch's size, so the statement is compiled once and
# the rows are encoded by the json module's C encoder): psycopg's executemany sent a statement
# per row, and dumping each row's parameters in Python was the largest part of a worker's CPU
# after sending (arrays are no better: psycopg escapes each string of a text array in Python).
_RECORD_ATTEMPTS = sa.text("""
INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, at, status,
  latency_ms, response_headers, response_body, error, outcome)
SELECT delivery_id, endpoint_id, event_id, attempt, at, status,
  latency_ms, response_headers, response_body, error, outcome
FROM json_to_recordset(CAST(:rows AS json)) AS r(delivery_id bigint, endpoint_id text,
  event_id text, attempt integer, at double precision, status integer,
  latency_ms double precision, response_headers json, response_body text, error text,
  outcome text)
""")
_RECORD_DELIVERIES = sa.text("""
UPDATE webhook_deliveries d SET status = v.b_status, attempts = v.b_attempts, due = v.b_due,
  claimed_until = NULL, claimed_by = NULL,
  first_attempt_at = COALESCE(d.first_attempt_at, v.b_at), finished_at = v.b_finished,
  last_status = v.b_last_status, last_error = v.b_last_error
FROM json_to_recordset(CAST(:rows AS json)) AS v(b_id bigint, b_me text, b_status text,
  b_attempts integer, b_due double precision, b_at double precision,
  b_finished double precision, b_last_status integer, b_last_error text)
WHERE d.id = v.b_id AND d.claimed_by = v.b_me
""")


class _ClaimedRow(NamedTuple):
    """A claimed row with its payload and limits, as the PostgreSQL claim returns it."""

    id: int
    event_id: str
    endpoint_id: str
    attempts: int
    published_at: float
    payload: str | None
    limited: int | None


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery_id: int
    event_id: str
    endpoint_id: str
    attempts: int
    """Attempts made before this one."""
    published_at: float
    payload: str


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim took: the deliveries to send now, and what it says about the queue."""

    deliveries: list[Claimed]
    full: bool
    """It took as many as it was asked for: more may be due."""
    next_due: float | None = None
    """The earliest of the deliveries its endpoints' limits gave back, when there were some."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result and what becomes of its delivery."""

    claimed: Claimed
    at: float
    latency: float
    status: int | None
    headers: Sequence[tuple[str, str]]
    body: str
    error: str | None
    result: str
    """``succeeded``, ``retrying`` (``due`` set), ``dead`` or ``disabled`` (410 Gone)."""
    due: float | None = None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    pending: int
    oldest_due: float | None
    dead: int


class DeliveryQueue:
    """The queue of one store, seen by one process (``worker``: its claims' name)."""

    def __init__(
        self, database: Database, worker: str, woken: Callable[[], None] | None = None
    ) -> None:
        """``woken`` is told when a redelivery committed (the in-process dispatcher wakes up;
        on PostgreSQL every delivering process is woken, :mod:`portico.events.wakeup`)."""
        self.database = database
        self.worker = worker
        self.woken = woken
        postgresql = database.backend == "postgresql"
        self._claim = sa.text(
            _CLAIM.format(
                lock=" FOR UPDATE SKIP LOCKED" if postgresql else "",
                returning=_RETURNING_MORE if postgresql else "",
            )
        )
        self._claimed_more = (
            None
            if postgresql
            else sa.text(_CLAIMED_MORE).bindparams(sa.bindparam("ids", expanding=True))
        )

    def claim(self, now: float, limit: int, hold: float) -> Claim:
        """Up to ``limit`` due deliveries, held by this process for ``hold`` seconds: those their
        endpoints' rate limits and concurrency admit; the others are given back, due later."""
        with self.database.write() as session:
            rows: Sequence[Any] = session.execute(
                self._claim, {"until": now + hold, "me": self.worker, "now": now, "limit": limit}
            ).all()
            if rows and self._claimed_more is not None:
                more = {
                    row.id: row
                    for row in session.execute(self._claimed_more, {"ids": [r.id for r in rows]})
                }
                rows = [
                    _ClaimedRow(
                        row.id,
                        row.event_id,
                        row.endpoint_id,
                        row.attempts,
                        row.published_at,
                        more[row.id].payload,
                        more[row.id].limited,
                    )
                    for row in rows
                ]
            full = len(rows) == limit
            next_due = None
            limited = sorted({row.endpoint_id for row in rows if row.limited})
            if limited:
                given_back = self._admit(session, rows, limited, now)
                if given_back:
                    rows = [row for row in rows if row.id not in given_back]
                    next_due = min(given_back.values())
        claimed = [
            Claimed(
                row.id,
                row.event_id,
                row.endpoint_id,
                row.attempts,
                row.published_at,
                row.payload or "",
            )
            for row in rows
        ]
        claimed.sort(key=lambda item: item.delivery_id)
        return Claim(claimed, full, next_due)

    def _admit(
        self, session: Session, rows: Sequence[Any], limited: list[str], now: float
    ) -> dict[int, float]:
        """Apply the limits of the ``limited`` endpoints to the claimed ``rows``; returns the
        deliveries given back, and when each is due."""
        # Locked in the order of their ids: two claims lock the same endpoints in the same order,
        # so neither waits for the other in a circle. (SQLite: no FOR UPDATE, one writer.)
        endpoints = session.execute(
            sa.select(_EP.c.id, _EP.c.rate_limit, _EP.c.concurrency, _EP.c.rate_tat, _EP.c.held)
            .where(_EP.c.id.in_(limited))
            .order_by(_EP.c.id)
            .with_for_update()
        ).all()
        batch = {row.id for row in rows}
        previous = {
            delivery_id
            for endpoint in endpoints
            if endpoint.concurrency is not None
            for delivery_id in endpoint.held or ()
            if delivery_id not in batch
        }
        still_held: dict[str, list[int]] = {}
        if previous:
            for delivery_id, endpoint_id in session.execute(
                sa.select(_D.c.id, _D.c.endpoint_id).where(
                    _D.c.id.in_(previous), _D.c.status == "pending", _D.c.claimed_until > now
                )
            ):
                still_held.setdefault(endpoint_id, []).append(delivery_id)
        given_back: dict[int, float] = {}
        states = []
        for endpoint in endpoints:
            admission = admit(
                sorted(row.id for row in rows if row.endpoint_id == endpoint.id),
                now,
                rate_limit=endpoint.rate_limit,
                concurrency=endpoint.concurrency,
                rate_tat=endpoint.rate_tat,
                still_held=sorted(still_held.get(endpoint.id, ())),
            )
            given_back.update(admission.deferred)
            if admission.rate_tat != endpoint.rate_tat or admission.held != endpoint.held:
                states.append(
                    {"b_id": endpoint.id, "b_tat": admission.rate_tat, "b_held": admission.held}
                )
        if states:
            session.execute(
                sa.update(_EP)
                .where(_EP.c.id == sa.bindparam("b_id"))
                .values(rate_tat=sa.bindparam("b_tat"), held=sa.bindparam("b_held")),
                states,
            )
        if given_back:
            session.execute(
                sa.update(_D)
                .where(_D.c.id == sa.bindparam("b_id"))
                .values(claimed_until=None, claimed_by=None, due=sa.bindparam("b_due")),
                [{"b_id": key, "b_due": due} for key, due in given_back.items()],
            )
        return given_back

    def record(self, outcomes: Sequence[Outcome], disable_after: float) -> list[str]:
        """Write the attempts and the deliveries' new state in one transaction; returns the ids
        of the endpoints this disabled (a 410, or failing for ``disable_after`` seconds)."""
        if not outcomes:
            return []
        attempts = [
            {
                "delivery_id": o.claimed.delivery_id,
                "endpoint_id": o.claimed.endpoint_id,
                "event_id": o.claimed.event_id,
                "attempt": o.claimed.attempts + 1,
                "at": o.at,
                "status": o.status,
                "latency_ms": round(o.latency * 1000, 3),
                "response_headers": [list(pair) for pair in o.headers],
                "response_body": o.body,
                "error": o.error,
                "outcome": o.result,
            }
            for o in outcomes
        ]
        updates = [
            {
                "b_id": o.claimed.delivery_id,
                "b_me": self.worker,
                "b_status": "pending" if o.result == "retrying" else _final(o.result),
                "b_attempts": o.claimed.attempts + 1,
                "b_due": o.due if o.due is not None else o.at,
                "b_at": o.at,
                "b_finished": None if o.result == "retrying" else o.at,
                "b_last_status": o.status,
                "b_last_error": o.error,
            }
            for o in outcomes
        ]
        statement = (
            sa.update(_D)
            .where(_D.c.id == sa.bindparam("b_id"), _D.c.claimed_by == sa.bindparam("b_me"))
            .values(
                status=sa.bindparam("b_status"),
                attempts=sa.bindparam("b_attempts"),
                due=sa.bindparam("b_due"),
                claimed_until=None,
                claimed_by=None,
                first_attempt_at=sa.func.coalesce(_D.c.first_attempt_at, sa.bindparam("b_at")),
                finished_at=sa.bindparam("b_finished"),
                last_status=sa.bindparam("b_last_status"),
                last_error=sa.bindparam("b_last_error"),
            )
        )
        succeeded = {o.claimed.endpoint_id for o in outcomes if o.result == "succeeded"}
        failed: dict[str, float] = {}
        gone: set[str] = set()
        for o in outcomes:
            if o.result == "disabled":
                gone.add(o.claimed.endpoint_id)
            elif o.result != "succeeded":
                failed[o.claimed.endpoint_id] = min(o.at, failed.get(o.claimed.endpoint_id, o.at))
        disabled: list[str] = []
        with self.database.write() as session:
            if self._claimed_more is None:  # PostgreSQL
                session.execute(_RECORD_ATTEMPTS, {"rows": json.dumps(attempts)})
                session.execute(_RECORD_DELIVERIES, {"rows": json.dumps(updates)})
            else:
                session.execute(_A.insert(), attempts)
                session.execute(statement, updates)
            # Only the rows that change: a claim locks the rows of endpoints with limits, and a
            # record that wrote every endpoint it delivered to would queue behind it.
            if succeeded:
                session.execute(
                    sa.update(_EP)
                    .where(_EP.c.id.in_(succeeded), _EP.c.failing_since.is_not(None))
                    .values(failing_since=None)
                )
            for endpoint_id, since in sorted(failed.items()):
                if endpoint_id in succeeded:
                    continue
                session.execute(
                    sa.update(_EP)
                    .where(_EP.c.id == endpoint_id, _EP.c.failing_since.is_(None))
                    .values(failing_since=since)
                )
            latest = max(o.at for o in outcomes)
            candidates = sa.select(_EP.c.id).where(
                _EP.c.disabled_at.is_(None),
                sa.or_(
                    _EP.c.id.in_(gone),
                    sa.and_(
                        _EP.c.id.in_(set(failed)),
                        _EP.c.failing_since <= latest - disable_after,
                    ),
                ),
            )
            disabled = list(session.scalars(candidates))
            if disabled:
                for endpoint_id in disabled:
                    reason = (
                        "answered 410 Gone"
                        if endpoint_id in gone
                        else f"every delivery failed for {disable_after:g} s"
                    )
                    session.execute(
                        sa.update(_EP)
                        .where(_EP.c.id == endpoint_id)
                        .values(disabled_at=datetime.now(UTC), disabled_reason=reason)
                    )
        return disabled

    # -- operators and owners --------------------------------------------------------------------

    def redeliver(
        self,
        *,
        delivery_ids: Sequence[int] = (),
        endpoint_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        now: float,
    ) -> int:
        """Make dead (or cancelled) deliveries pending again, due now: the ones named, or those of
        an endpoint that died within ``[since, until)``. Their attempts count again from zero."""
        condition: sa.ColumnElement[bool] = _D.c.status.in_(("dead", "cancelled"))
        if delivery_ids:
            condition = sa.and_(condition, _D.c.id.in_(list(delivery_ids)))
        elif endpoint_id is None:
            raise ValueError("redeliver what: delivery ids, or an endpoint")
        if endpoint_id is not None:
            condition = sa.and_(condition, _D.c.endpoint_id == endpoint_id)
        if since is not None:
            condition = sa.and_(condition, _D.c.finished_at >= since)
        if until is not None:
            condition = sa.and_(condition, _D.c.finished_at < until)
        with self.database.write() as session:
            done = session.execute(
                sa.update(_D)
                .where(condition)
                .values(
                    status="pending",
                    attempts=0,
                    due=now,
                    finished_at=None,
                    claimed_until=None,
                    claimed_by=None,
                )
            )
            count = int(done.rowcount or 0)  # type: ignore[attr-defined]
            if count:
                notify_workers(session)
        if count and self.woken is not None:
            self.woken()
        return count

    def depth(self, now: float) -> QueueDepth:
        with self.database.read() as session:
            pending, oldest = session.execute(
                sa.select(sa.func.count(), sa.func.min(_D.c.published_at)).where(
                    _D.c.status == "pending"
                )
            ).one()
            dead = session.scalar(sa.select(sa.func.count()).where(_D.c.status == "dead"))
        return QueueDepth(int(pending or 0), oldest, int(dead or 0))

    def prune(self, before: float) -> int:
        """Delete what finished before ``before``: deliveries, their attempts, and the events no
        delivery refers to any more; returns the deliveries deleted."""
        cutoff = datetime.fromtimestamp(before, UTC)
        with self.database.write() as session:
            finished = sa.select(_D.c.id).where(_D.c.status != "pending", _D.c.finished_at < before)
            session.execute(sa.delete(_A).where(_A.c.delivery_id.in_(finished)))
            deleted = session.execute(
                sa.delete(_D).where(_D.c.status != "pending", _D.c.finished_at < before)
            )
            session.execute(sa.delete(_A).where(_A.c.at < before))
            session.execute(
                sa.delete(_E).where(
                    _E.c.created_at < cutoff,
                    ~sa.exists().where(_D.c.event_id == _E.c.id),
                )
            )
            inbound: sa.Table = InboundMessageRow.__table__  # type: ignore[assignment]
            session.execute(sa.delete(inbound).where(inbound.c.received_at < cutoff))
            return int(deleted.rowcount or 0)  # type: ignore[attr-defined]


def _final(result: str) -> str:
    return "succeeded" if result == "succeeded" else "dead"
