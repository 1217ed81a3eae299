"""A publish on PostgreSQL survives the loss of its pooled connection: one the server terminated
while it sat idle is replaced before use (the idle ping), one lost during the publish's
statement is replaced and the statement sent again with the same event id, so the event is
stored once, whether or not the first try committed. A real PostgreSQL server; the connections
are cut by the server itself (``pg_terminate_backend``)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from tests.events.harness import config_with, events_over

from portico.events.publishing import Published, Publisher
from portico.events.service import Events
from portico.store import database as store_database
from portico.store.database import Database, DatabaseUnavailable
from portico.store.secrets import Secrets
from portico.store.tables import DeliveryRow, EventRow

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

_D = DeliveryRow.__table__
_E = EventRow.__table__


def cut_every_other_connection(database: Database) -> int:
    """The server terminates every connection to the database but the one asking."""
    with sa.create_engine(database.engine.url, poolclass=sa.NullPool).connect() as connection:
        cut = connection.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    return int(cut)


def stored(database: Database) -> tuple[list[str], int]:
    with database.read() as session:
        events = list(session.execute(sa.select(_E.c.id).order_by(_E.c.created_at)).scalars())
        deliveries = session.execute(sa.select(sa.func.count()).select_from(_D)).scalar_one()
    return events, int(deliveries)


def quietly_published(events: Events) -> Published:
    """A first publish that keeps the endpoints in memory and queues no delivery, so that no
    notification (sent by a thread of its own) takes a pooled connection after it."""
    published = events.publisher.publish("invoice.paid", {}, publisher="admin:test")
    assert published.deliveries == 0
    return published


def invalidations_of(database: Database) -> list[str]:
    """Who found the connections the pool let go from now on: ``ping`` (before lending it) or
    ``statement`` (the driver's error, psycopg's ``AdminShutdown`` here)."""
    seen: list[str] = []

    def record(_dbapi_connection: Any, _record: Any, exception: BaseException | None) -> None:
        seen.append("ping" if isinstance(exception, sa.exc.DisconnectionError) else "statement")

    sa.event.listen(database.engine, "invalidate", record)
    return seen


def test_a_connection_cut_while_idle_is_replaced_before_the_publish(
    database: Database, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a", types=["order.shipped"])
    first = quietly_published(events)
    monkeypatch.setattr(store_database, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout pings
    assert cut_every_other_connection(database) >= 1
    found = invalidations_of(database)

    second = events.publisher.publish("order.shipped", {"n": 2}, publisher="admin:test")

    assert found == ["ping"]  # the ping found it cut; no statement failed
    assert stored(database) == ([first.id, second.id], 1)


def test_a_connection_cut_under_the_publish_is_replaced_and_the_event_stored_once(
    database: Database, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a", types=["order.shipped"])
    events.endpoints.create("acme/crm", "http://127.0.0.1:9/b", types=["order.shipped"])
    first = quietly_published(events)
    # Used a moment ago: lent without a ping, so the publish's own statement meets the cut.
    monkeypatch.setattr(store_database, "PING_AFTER_IDLE_SECONDS", 3600.0)
    assert cut_every_other_connection(database) >= 1
    found = invalidations_of(database)

    second = events.publisher.publish("order.shipped", {"n": 2}, publisher="admin:test")

    assert found == ["statement"]  # the first try, on the cut connection
    assert second.created and second.deliveries == 2
    assert stored(database) == ([first.id, second.id], 2)
    # The pool let the cut connections go: the next publish needs no retry.
    third = events.publisher.publish("order.shipped", {"n": 3}, publisher="admin:test")
    assert found == ["statement"]
    assert stored(database) == ([first.id, second.id, third.id], 4)


def test_a_publish_whose_reply_was_lost_after_it_committed_is_not_stored_twice(
    database: Database, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement committed, then the connection broke before its answer arrived: the
    publisher sends it again, and the event's id, already stored, tells it committed."""
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    first = events.publisher.publish("order.shipped", {"n": 1}, publisher="admin:test")
    real = Publisher._execute_at_once
    tries: list[str] = []

    def commits_then_loses_the_answer(publisher: Publisher, parameters: dict[str, Any]) -> int:
        tries.append(parameters["id"])
        inserted = real(publisher, parameters)
        if len(tries) == 1:
            lost = DatabaseUnavailable("cannot connect to the database: the connection broke")
            lost.connection_lost = True
            raise lost
        return inserted

    monkeypatch.setattr(Publisher, "_execute_at_once", commits_then_loses_the_answer)
    second = events.publisher.publish("order.shipped", {"n": 2}, publisher="admin:test")

    assert tries == [second.id, second.id]  # sent again, with the same event id
    assert second.created and second.deliveries == 1
    assert stored(database) == ([first.id, second.id], 2)


def test_a_publish_fails_plainly_when_the_server_is_gone_for_good(
    database: Database, secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent again once, not more: a second lost connection is the caller's error to see."""
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    events.publisher.publish("order.shipped", {"n": 1}, publisher="admin:test")
    tries: list[str] = []

    def always_lost(publisher: Publisher, parameters: dict[str, Any]) -> int:
        tries.append(parameters["id"])
        lost = DatabaseUnavailable("cannot connect to the database: the connection broke")
        lost.connection_lost = True
        raise lost

    monkeypatch.setattr(Publisher, "_execute_at_once", always_lost)
    with pytest.raises(DatabaseUnavailable):
        events.publisher.publish("order.shipped", {"n": 2}, publisher="admin:test")
    assert len(tries) == 2
