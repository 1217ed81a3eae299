"""Endpoints in the store: the file's endpoints synced as ``ep_cfg_<name>``, secrets sealed at
rest, deletion cancelling pending deliveries, and pruning by retention."""

from __future__ import annotations

import time

import sqlalchemy as sa
from tests.events.harness import config_with, events_over

from portico.config.events import WebhookEndpoint
from portico.events.signing import generate_secret
from portico.store.database import Database
from portico.store.secrets import Secrets
from portico.store.tables import AttemptRow, DeliveryRow, EndpointSecretRow, EventRow


def endpoint(url: str, secret: str, **more: object) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(
        {"consumer": "acme/crm", "url": url, "secret": secret, **more}
    )


def test_the_files_endpoints_are_created_changed_and_removed_in_the_store(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    first, second = generate_secret(), generate_secret()
    events.endpoints.create("acme/crm", "https://hooks.example.com/own")  # a consumer's own
    events.endpoints.sync_config(
        {
            "crm": endpoint("https://hooks.example.com/crm", first, types=["order.*"]),
            "old": endpoint("https://hooks.example.com/old", first),
        }
    )
    crm = events.endpoints.get("ep_cfg_crm")
    assert (crm.source, crm.types, crm.consumer) == ("config", ("order.*",), "acme/crm")
    assert events.endpoints.signing_secrets("ep_cfg_crm") == [first]

    events.endpoints.sync_config(
        {
            "crm": endpoint(
                "https://hooks.example.com/crm2", second, ordering={"key": "data.order_id"}
            )
        }
    )
    crm = events.endpoints.get("ep_cfg_crm")
    assert (crm.url, crm.types, crm.ordering_key) == (
        "https://hooks.example.com/crm2",
        ("*",),
        "data.order_id",
    )
    assert events.endpoints.signing_secrets("ep_cfg_crm") == [second]  # replaced at once
    ids = {e.id for e in events.endpoints.list()}
    assert "ep_cfg_old" not in ids and len(ids) == 2  # the consumer's own endpoint is kept


def test_secrets_are_sealed_in_the_store(database: Database, secrets: Secrets) -> None:
    events = events_over(database, secrets, config_with())
    _, secret = events.endpoints.create("acme/crm", "https://hooks.example.com/a")
    with database.read() as session:
        (stored,) = session.scalars(sa.select(EndpointSecretRow.sealed_secret)).all()
    assert secret not in stored and secret.removeprefix("whsec_") not in stored


def test_deleting_an_endpoint_cancels_its_pending_deliveries(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    gone, _ = events.endpoints.create("acme/crm", "http://127.0.0.1:9/a")
    events.publisher.publish("order.shipped", {}, publisher="admin:x")
    events.endpoints.delete(gone.id)
    with database.read() as session:
        (status,) = session.scalars(sa.select(DeliveryRow.status)).all()
    assert status == "cancelled"
    assert events.endpoints.signing_secrets(gone.id) == []


def test_pruning_removes_what_finished_before_the_retention_only(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/crm", "http://127.0.0.1:9/a")
    old = events.publisher.publish("order.shipped", {"n": 1}, publisher="admin:x")
    kept = events.publisher.publish("order.shipped", {"n": 2}, publisher="admin:x")
    now = time.time()
    with database.write() as session:
        session.execute(
            sa.update(DeliveryRow)
            .where(DeliveryRow.event_id == old.id)
            .values(status="succeeded", finished_at=now - 100)
        )
        session.execute(
            sa.insert(AttemptRow).values(
                delivery_id=1, endpoint_id="x", event_id=old.id, attempt=1, at=now - 100,
                status=200, latency_ms=1.0, response_headers=[], response_body="", error=None,
                outcome="succeeded",
            )
        )  # fmt: skip
    assert events.queue.prune(now - 50) == 1
    with database.read() as session:
        assert session.scalars(sa.select(DeliveryRow.event_id)).all() == [kept.id]
        assert session.scalars(sa.select(AttemptRow.id)).all() == []
    # The event itself goes once it is older than the retention and nothing refers to it.
    assert events.queue.prune(now + 10) == 0
    with database.read() as session:
        assert set(session.scalars(sa.select(EventRow.id))) == {kept.id}
