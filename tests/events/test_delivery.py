"""Publishing and delivering, through the real store (SQLite and PostgreSQL) to a real receiver:
signatures the standardwebhooks library accepts, retries, dead letters and redelivery, 410,
Retry-After, FIFO per key, rotation overlap, and per-endpoint concurrency and rate limits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.events.harness import config_with, delivering, events_over, eventually, publish
from tests.support.receivers import Receiver

from portico.events.catalog import InvalidPayload, UnknownEventType
from portico.events.queue import _CLAIMED_MORE
from portico.store.database import Database
from portico.store.secrets import Secrets
from portico.store.tables import AttemptRow, DeliveryRow, EventRow


def rows(database: Database, table: type, **where: object) -> list[sa.Row]:
    query = sa.select(table.__table__)
    for name, value in where.items():
        query = query.where(table.__table__.c[name] == value)
    with database.read() as session:
        return list(session.execute(query))


def test_an_event_is_committed_with_one_delivery_per_subscribed_endpoint(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    add = events.endpoints.create
    every, _ = add("acme/billing", "http://127.0.0.1:9/a", types=["*"])
    orders, _ = add("acme/crm", "http://127.0.0.1:9/b", types=["order.*"])
    big, _ = add("acme/crm", "http://127.0.0.1:9/c", filter={"data.total": {"gte": 100}})
    add("acme/crm", "http://127.0.0.1:9/d", types=["invoice.paid"])
    add("acme/crm", "http://127.0.0.1:9/e", disabled=True)
    other_tenant, _ = add("globex/erp", "http://127.0.0.1:9/f")

    small = events.publisher.publish(
        "order.created", {"order_id": "o1", "total": 5}, publisher="consumer:acme/billing",
        tenant="acme",
    )  # fmt: skip
    platform = events.publisher.publish(
        "order.created", {"order_id": "o2", "total": 500}, publisher="admin:x"
    )

    assert small.created and small.deliveries == 2
    assert {r.endpoint_id for r in rows(database, DeliveryRow, event_id=small.id)} == {
        every.id,
        orders.id,
    }
    # A platform event (no tenant) goes to every tenant's subscribed endpoints.
    assert {r.endpoint_id for r in rows(database, DeliveryRow, event_id=platform.id)} == {
        every.id,
        orders.id,
        big.id,
        other_tenant.id,
    }
    (stored,) = rows(database, EventRow, id=small.id)
    body = json.loads(stored.payload)
    assert body["type"] == "order.created" and body["data"] == {"order_id": "o1", "total": 5}
    assert body["timestamp"].endswith("Z")


def test_a_repeated_idempotency_key_returns_the_original_event(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    first = events.publisher.publish(
        "order.shipped", {"n": 1}, publisher="consumer:acme/billing", idempotency_key="k1"
    )
    again = events.publisher.publish(
        "order.shipped", {"n": 2}, publisher="consumer:acme/billing", idempotency_key="k1"
    )
    other = events.publisher.publish(
        "order.shipped", {"n": 3}, publisher="consumer:acme/crm", idempotency_key="k1"
    )
    assert (again.id, again.created, again.deliveries) == (first.id, False, 0)
    assert other.id != first.id  # keys are per publisher
    assert len(rows(database, EventRow)) == 2
    assert len(rows(database, DeliveryRow)) == 2


def test_a_payload_its_schema_refuses_stores_nothing(database: Database, secrets: Secrets) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    with pytest.raises(InvalidPayload) as refused:
        events.publisher.publish("order.created", {"order_id": 7}, publisher="admin:x")
    assert {(e.pointer, e.message.split(" ")[0]) for e in refused.value.errors} >= {
        ("/data/order_id", "7")
    }
    with pytest.raises(UnknownEventType):
        events.publisher.publish("order.deleted", {}, publisher="admin:x")
    with pytest.raises(UnknownEventType):  # Portico's own types are not for publishers
        events.publisher.publish("endpoint.disabled", {}, publisher="admin:x")
    assert rows(database, EventRow) == [] and rows(database, DeliveryRow) == []


def test_deliveries_are_signed_as_standard_webhooks_and_retried_with_the_same_id(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    endpoint, secret = events.endpoints.create("acme/billing", receiver.url("/a"))
    receiver.behaviours["/a"].fail_first = 2

    async def scenario() -> str:
        async with delivering(events):
            event_id = await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: rows(database, DeliveryRow)[0].status == "succeeded")
            return event_id

    event_id = asyncio.run(scenario())
    got = receiver.at("/a")
    assert [item.id for item in got] == [event_id] * 3
    (stored,) = rows(database, EventRow)
    for item in got:
        assert item.body == stored.payload.encode()  # the signed bytes are the bytes sent
        verified = Webhook(secret).verify(item.body, item.headers)
        assert verified["data"] == {"n": 1}
    attempts = rows(database, AttemptRow, delivery_id=rows(database, DeliveryRow)[0].id)
    assert [
        (a.attempt, a.status, a.outcome) for a in sorted(attempts, key=lambda a: a.attempt)
    ] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "succeeded"),
    ]
    assert attempts[0].response_body == "attempt 1"
    assert endpoint.id == attempts[0].endpoint_id


def test_a_delivery_dies_after_its_last_attempt_and_is_redelivered_on_request(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    endpoint, _ = events.endpoints.create("acme/billing", receiver.url("/a"))
    receiver.behaviours["/a"].status = 503

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: rows(database, DeliveryRow)[0].status == "dead")
            assert len(receiver.at("/a")) == 4  # the schedule's four attempts
            receiver.behaviours["/a"].status = 200
            since = time.time() - 60
            count = await asyncio.to_thread(
                events.queue.redeliver, endpoint_id=endpoint.id, since=since, now=time.time()
            )
            assert count == 1
            await eventually(lambda: rows(database, DeliveryRow)[0].status == "succeeded")

    asyncio.run(scenario())
    assert len({item.id for item in receiver.at("/a")}) == 1
    assert events.metrics.deliveries["dead"] == 1 and events.metrics.deliveries["succeeded"] == 1


def test_410_disables_the_endpoint_and_tells_its_tenant(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    gone, _ = events.endpoints.create("acme/billing", receiver.url("/gone"), types=["order.*"])
    events.endpoints.create("acme/billing", receiver.url("/ops"), types=["endpoint.disabled"])
    receiver.behaviours["/gone"].status = 410

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: len(receiver.at("/ops")) == 1)
            await publish(events, "order.shipped", {"n": 2})
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert len(receiver.at("/gone")) == 1  # nothing is sent to a disabled endpoint
    assert not events.endpoints.get(gone.id).enabled
    (notice,) = receiver.at("/ops")
    assert notice.json["type"] == "endpoint.disabled"
    assert notice.json["data"]["endpoint_id"] == gone.id
    assert "410" in notice.json["data"]["reason"]


def test_retry_after_is_honoured_on_429(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with(schedule=[0, 0.05, 3600]))
    events.endpoints.create("acme/billing", receiver.url("/a"))
    receiver.behaviours["/a"].status = 429
    receiver.behaviours["/a"].retry_after = "120"

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: rows(database, DeliveryRow)[0].attempts == 1)

    asyncio.run(scenario())
    (delivery,) = rows(database, DeliveryRow)
    (attempt,) = rows(database, AttemptRow)
    assert delivery.status == "pending"
    assert delivery.due - attempt.at == pytest.approx(120, abs=1)  # not the schedule's 0.05 s


def test_a_batch_of_outcomes_is_recorded_whole_even_with_a_nul_in_a_response_body(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    """Attempts of several endpoints and outcomes recorded in one batch (on PostgreSQL one
    statement each for the attempts and the deliveries): statuses, headers, bodies and errors
    as the attempts were, a delivery's first attempt kept; a NUL, which PostgreSQL's text cannot
    hold, does not stop the batch."""
    events = events_over(database, secrets, config_with(schedule=[0, 3600]))
    events.endpoints.create("acme/billing", receiver.url("/ok"))
    events.endpoints.create("acme/billing", receiver.url("/nul"))
    events.endpoints.create("acme/billing", receiver.url("/down"))
    receiver.behaviours["/nul"].body = b"before\x00after \xff"
    receiver.behaviours["/down"].status = 503

    async def scenario() -> None:
        async with delivering(events):
            for n in range(5):
                await publish(events, "order.shipped", {"n": n})
            await eventually(lambda: len(rows(database, AttemptRow)) == 15)

    asyncio.run(scenario())
    attempts = rows(database, AttemptRow)
    deliveries = {d.id: d for d in rows(database, DeliveryRow)}
    endpoints = {e.url: e.id for e in events.endpoints.list(limit=10)}
    outcomes: dict[str, set[tuple[str, int | None, str]]] = {}
    for attempt in attempts:
        delivery = deliveries[attempt.delivery_id]
        assert delivery.first_attempt_at == attempt.at and delivery.attempts == 1
        assert delivery.claimed_by is None and delivery.event_id == attempt.event_id
        assert dict(map(tuple, attempt.response_headers))["content-type"] == "text/plain"
        assert attempt.latency_ms > 0 and attempt.attempt == 1
        outcomes.setdefault(attempt.endpoint_id, set()).add(
            (attempt.outcome, attempt.status, attempt.response_body)
        )
        assert (delivery.status, delivery.last_status) == (
            "succeeded" if attempt.outcome == "succeeded" else "pending",
            attempt.status,
        )
    assert outcomes == {
        endpoints[receiver.url("/ok")]: {("succeeded", 200, "attempt 1")},
        endpoints[receiver.url("/nul")]: {("succeeded", 200, "before\ufffdafter \ufffd")},
        endpoints[receiver.url("/down")]: {("retrying", 503, "attempt 1")},
    }


def test_fifo_endpoints_deliver_each_key_in_order_without_holding_other_keys(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", receiver.url("/fifo"), ordering_key="data.order_id")
    receiver.behaviours["/fifo"].fail_first = 1  # every message fails once, then succeeds

    async def scenario() -> list[str]:
        async with delivering(events):
            ids = []
            for n in range(6):
                ids.append(
                    await publish(events, "order.shipped", {"order_id": "AB"[n % 2], "n": n})
                )
            await eventually(
                lambda: all(r.status == "succeeded" for r in rows(database, DeliveryRow))
            )
            return ids

    asyncio.run(scenario())
    got = receiver.at("/fifo")
    for key in "AB":
        sequence = [item.json["data"]["n"] for item in got if item.json["data"]["order_id"] == key]
        expected = [n for n in range(6) if "AB"[n % 2] == key]
        # Each message twice (a failure, then its success), and the next only after that.
        assert sequence == [n for n in expected for _ in range(2)]


def test_a_rotated_secret_keeps_signing_beside_the_new_one_during_the_overlap(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    endpoint, old = events.endpoints.create("acme/billing", receiver.url("/a"))
    new = events.endpoints.rotate(endpoint.id, overlap=3600)

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: len(receiver.at("/a")) == 1)

    asyncio.run(scenario())
    (item,) = receiver.at("/a")
    assert len(item.signature.split(" ")) == 2
    Webhook(old).verify(item.body, item.headers)
    Webhook(new).verify(item.body, item.headers)
    events.endpoints.rotate(endpoint.id, overlap=0)
    assert len(events.endpoints.signing_secrets(endpoint.id)) == 1


def test_an_endpoints_concurrency_and_rate_limit_are_kept(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", receiver.url("/one"), concurrency=1)
    events.endpoints.create("acme/billing", receiver.url("/slow"), rate_limit=10)
    receiver.behaviours["/one"].delay = 0.02

    async def scenario() -> None:
        async with delivering(events):
            for n in range(20):
                await publish(events, "order.shipped", {"n": n})
            await eventually(
                lambda: all(r.status == "succeeded" for r in rows(database, DeliveryRow))
            )

    asyncio.run(scenario())
    assert receiver.most_in_flight["/one"] == 1
    arrivals = sorted(item.at for item in receiver.at("/slow"))
    assert len(arrivals) == 20
    # 10 per second with a burst of one: no second holds more than 11 arrivals.
    assert max(sum(1 for t in arrivals if start <= t < start + 1) for start in arrivals) <= 11


def test_a_private_address_is_refused_at_delivery_time_and_logged(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    # http is allowed (development mode), loopback is not: the receiver must never be reached.
    events = events_over(database, secrets, config_with(allow_networks=[]))
    events.endpoints.create("acme/billing", receiver.url("/a"))

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: rows(database, DeliveryRow)[0].status == "dead")

    asyncio.run(scenario())
    assert receiver.at("/a") == []
    attempts = rows(database, AttemptRow)
    assert len(attempts) == 4
    assert {(a.status, a.error) for a in attempts} == {(None, "loopback-address")}


def test_a_claim_reads_payloads_and_limits_through_indexes_on_sqlite(
    database: Database, secrets: Secrets
) -> None:
    """SQLite plans a correlated subquery of ``RETURNING`` as a scan of its table for every row
    returned: a claim that read the payloads so cost in proportion to the events kept. Every
    table a claim's statements read is searched by an index or its key, not scanned (the small
    list of disabled endpoints excepted)."""
    if database.backend != "sqlite":
        pytest.skip("SQLite's plans")
    events = events_over(database, secrets, config_with())
    queue = events.queue
    statements = [str(queue._claim), _CLAIMED_MORE.replace(":ids", "(1, 2)")]
    plans = []
    with database.read() as session:
        for statement in statements:
            plan = session.execute(
                sa.text(f"EXPLAIN QUERY PLAN {statement}"),
                {"until": 1.0, "me": "x", "now": 0.0, "limit": 10},
            ).all()
            plans.extend(row[-1] for row in plan)
    scans = [step for step in plans if step.startswith("SCAN")]
    assert scans == ["SCAN e"], plans  # webhook_endpoints' disabled ones, in the claim's NOT IN
    assert any("SEARCH ev USING INDEX" in step for step in plans), plans
