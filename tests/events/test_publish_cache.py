"""What a publisher keeps in memory stays true: the subscribed endpoints (with their compiled
filters) follow every change committed before a publish, whoever made it (this process's API, a
delivering process disabling an endpoint, another process, an operator's SQL), and the catalog
follows the config; idempotency stays exact when publishes race. Real store, both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.events.harness import (
    TENANTS,
    TYPES,
    config_with,
    delivering,
    events_over,
    eventually,
    publish,
)
from tests.support.gateway import run_portico, with_defaults, write_config
from tests.support.receivers import Receiver

from portico.config.model import PorticoConfig
from portico.events.catalog import InvalidPayload
from portico.events.service import Events
from portico.store.database import Database
from portico.store.secrets import ENVIRONMENT_VARIABLE, Secrets
from portico.store.secrets.keys import MasterKeys, generate_key_text, parse_key
from portico.store.secrets.sources import FixedKeys
from portico.store.tables import DeliveryRow, EventRow

_D = DeliveryRow.__table__
_E = EventRow.__table__


def receivers_of(database: Database, event_id: str) -> dict[str, str | None]:
    """The endpoints the event was queued for, and each delivery's ordering key."""
    query = sa.select(_D.c.endpoint_id, _D.c.ordering_key).where(_D.c.event_id == event_id)
    with database.read() as session:
        return {row.endpoint_id: row.ordering_key for row in session.execute(query)}


def published_to(events: Events, event_type: str = "order.shipped", **data: Any) -> set[str]:
    done = events.publisher.publish(event_type, data, publisher="admin:test")
    return set(receivers_of(events.database, done.id))


@contextmanager
def statements_of(database: Database) -> Iterator[list[str]]:
    """The SQL statements the engine sends while the block runs: their first three words."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()[:3]))

    sa.event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", record)


def test_endpoints_are_read_again_only_when_a_change_committed(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    first, _ = events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    assert published_to(events) == {first.id}  # the endpoints are read and kept

    with statements_of(database) as statements:
        assert published_to(events, n=2) == {first.id}
    publish_statements = [s for s in statements if s.startswith(("INSERT", "WITH"))]
    if database.backend == "postgresql":
        # One statement in autocommit, inserting the event and its deliveries together.
        assert publish_statements == ["WITH counter AS"]
    else:
        assert publish_statements == ["INSERT INTO events", "INSERT INTO webhook_deliveries"]

    # Changes that do not change who receives what do not make publishers read again...
    events.endpoints.update(first.id, {"url": "http://127.0.0.1:9/moved", "rate_limit": 5.0})
    with statements_of(database) as statements:
        assert published_to(events, n=3) == {first.id}
    assert not any("webhook_endpoints" in s for s in statements)

    # ...a new endpoint does, and receives the very next event.
    second, _ = events.endpoints.create("acme/crm", "http://127.0.0.1:9/b")
    with statements_of(database) as statements:
        assert published_to(events, n=4) == {first.id, second.id}
    assert "SELECT webhook_endpoints.id, webhook_endpoints.tenant," in statements


def test_every_change_reaches_the_next_publish(database: Database, secrets: Secrets) -> None:
    events = events_over(database, secrets, config_with())
    kept, _ = events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    changing, _ = events.endpoints.create("acme/crm", "http://127.0.0.1:9/b", types=["order.*"])
    assert published_to(events) == {kept.id, changing.id}

    events.endpoints.update(changing.id, {"types": ["invoice.*"]})
    assert published_to(events) == {kept.id}
    assert published_to(events, "invoice.paid") == {kept.id, changing.id}

    events.endpoints.update(changing.id, {"types": ["*"], "filter": {"data.total": {"gte": 100}}})
    assert published_to(events, total=5) == {kept.id}
    assert published_to(events, total=500) == {kept.id, changing.id}
    events.endpoints.update(changing.id, {"filter": {"data.total": {"lt": 100}}})
    assert published_to(events, total=5) == {kept.id, changing.id}
    assert published_to(events, total=500) == {kept.id}
    events.endpoints.update(changing.id, {"filter": None})

    events.endpoints.update(changing.id, {"ordering_key": "data.order_id"})
    done = events.publisher.publish("order.shipped", {"order_id": "o-7"}, publisher="admin:t")
    assert receivers_of(database, done.id) == {kept.id: None, changing.id: "o-7"}

    events.endpoints.set_disabled(changing.id, "paused by the test")
    assert published_to(events) == {kept.id}
    events.endpoints.set_disabled(changing.id, None)
    assert published_to(events) == {kept.id, changing.id}

    events.endpoints.delete(changing.id)
    assert published_to(events) == {kept.id}


def test_a_tenants_event_still_goes_only_to_its_endpoints(
    database: Database, secrets: Secrets
) -> None:
    events = events_over(database, secrets, config_with())
    acme, _ = events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    globex, _ = events.endpoints.create("globex/erp", "http://127.0.0.1:9/b")
    for _ in range(2):  # read, then kept
        acme_only = events.publisher.publish(
            "order.shipped", {}, publisher="consumer:acme/billing", tenant="acme"
        )
        assert set(receivers_of(database, acme_only.id)) == {acme.id}
        assert published_to(events) == {acme.id, globex.id}


def test_an_endpoint_a_delivering_process_disables_gets_no_new_deliveries(
    database: Database, secrets: Secrets, receiver: Receiver
) -> None:
    """The delivery queue disables an endpoint that answers 410 in its own transaction, with its
    own SQL: publishers notice all the same."""
    events = events_over(database, secrets, config_with())
    gone, _ = events.endpoints.create("acme/billing", receiver.url("/gone"))
    kept, _ = events.endpoints.create("acme/crm", receiver.url("/kept"))
    receiver.behaviours["/gone"].status = 410

    async def scenario() -> None:
        async with delivering(events):
            await publish(events, "order.shipped", {"n": 1})
            await eventually(lambda: not events.endpoints.get(gone.id).enabled)

    asyncio.run(scenario())
    assert published_to(events, n=2) == {kept.id}


def test_an_operators_sql_is_noticed(database: Database, secrets: Secrets) -> None:
    events = events_over(database, secrets, config_with())
    first, _ = events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    second, _ = events.endpoints.create("acme/crm", "http://127.0.0.1:9/b")
    assert published_to(events) == {first.id, second.id}

    with database.write() as session:
        session.execute(
            sa.text("UPDATE webhook_endpoints SET types = :types WHERE id = :id"),
            {"types": '["invoice.*"]', "id": second.id},
        )
    assert published_to(events) == {first.id}
    with database.write() as session:
        session.execute(sa.text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": first.id})
    assert published_to(events) == set()


def test_without_the_change_counter_endpoints_are_read_at_every_publish(
    database: Database, secrets: Secrets
) -> None:
    """Someone deleted the counter's row: nothing can be kept, and nothing is missed."""
    events = events_over(database, secrets, config_with())
    first, _ = events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    with database.write() as session:
        session.execute(sa.text("DELETE FROM webhook_endpoint_changes"))
    assert published_to(events) == {first.id}
    second, _ = events.endpoints.create("acme/crm", "http://127.0.0.1:9/b")
    assert published_to(events) == {first.id, second.id}
    events.endpoints.set_disabled(first.id, "paused")
    assert published_to(events) == {second.id}


def test_another_processs_changes_reach_the_next_publish(
    database: Database, tmp_path: Path
) -> None:
    """Endpoints created, changed, disabled and deleted by the real ``portico webhooks``
    command, a process of its own, while this one keeps publishing."""
    key = generate_key_text()
    secrets = Secrets(FixedKeys(MasterKeys.of([parse_key(key)], "the test's key")))
    config = {
        "database": {"url": database.url.render_as_string(hide_password=False)},
        "tenants": TENANTS,
        "events": {
            "types": TYPES,
            "delivery": {"allow_http": True, "allow_networks": ["127.0.0.0/8"]},
        },
    }
    path = write_config(tmp_path / "portico.yaml", with_defaults(config))

    def portico(*args: str) -> str:
        done = run_portico(
            "webhooks", "endpoints", *args, "-c", str(path), cwd=tmp_path,
            env={ENVIRONMENT_VARIABLE: key},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    events = events_over(database, secrets, config_with())
    assert published_to(events) == set()  # read, and kept

    created = portico("create", "--consumer", "acme/billing", "--url", "http://127.0.0.1:9/x")
    endpoint_id = created.split("Created webhook endpoint ", 1)[1].split()[0]
    assert published_to(events) == {endpoint_id}

    portico("update", endpoint_id, "--type", "invoice.*")
    assert published_to(events) == set()
    assert published_to(events, "invoice.paid") == {endpoint_id}

    portico("disable", endpoint_id)
    assert published_to(events, "invoice.paid") == set()
    portico("enable", endpoint_id)
    assert published_to(events, "invoice.paid") == {endpoint_id}

    portico("delete", endpoint_id)
    assert published_to(events, "invoice.paid") == set()


def test_a_config_reload_changes_what_the_schema_takes(
    database: Database, secrets: Secrets
) -> None:
    current = [config_with()]
    events = Events(database, secrets, lambda: current[0])
    order = {"order_id": "o1", "total": 5}
    events.publisher.publish("order.created", order, publisher="admin:test")

    changed = current[0].model_dump(by_alias=True, exclude_unset=True)
    changed["events"]["types"]["order.created"]["schema"]["required"] = ["order_id", "currency"]
    current[0] = PorticoConfig.model_validate(changed)

    with pytest.raises(InvalidPayload) as refused:
        events.publisher.publish("order.created", order, publisher="admin:test")
    assert [error.pointer for error in refused.value.errors] == ["/data"]
    assert "currency" in refused.value.errors[0].message
    events.publisher.publish("order.created", {**order, "currency": "EUR"}, publisher="admin:test")

    current[0] = config_with()  # and back
    events.publisher.publish("order.created", order, publisher="admin:test")


def test_racing_publishes_with_one_key_make_one_event(database: Database, secrets: Secrets) -> None:
    events = events_over(database, secrets, config_with())
    events.endpoints.create("acme/billing", "http://127.0.0.1:9/a")
    racers = 8
    start = threading.Barrier(racers)
    results: list[Any] = []

    def race(n: int) -> None:
        start.wait()
        try:
            published = events.publisher.publish(
                "order.shipped", {"n": n}, publisher="consumer:acme/billing",
                tenant="acme", idempotency_key="same",
            )  # fmt: skip
            results.append(published)
        except Exception as exc:  # reported below, with what the others got
            results.append(exc)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({r.id for r in results}) == 1
    assert sorted(r.created for r in results) == [False] * (racers - 1) + [True]
    with database.read() as session:
        stored = session.execute(sa.select(_E.c.id).where(_E.c.idempotency_key == "same")).all()
        deliveries = session.scalar(sa.select(sa.func.count()).select_from(_D))
    assert [row.id for row in stored] == [results[0].id]
    assert deliveries == 1
