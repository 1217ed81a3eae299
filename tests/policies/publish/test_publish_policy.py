"""The ``publish`` policy on a real ``portico serve`` in front of a real upstream: a successful
upstream answer publishes an event with data from the request or the response, which a real
receiver gets signed; Portico's own answers and unsuccessful statuses publish nothing; what
cannot be published is logged and counted, never dropped silently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.events.harness import TENANTS, TYPES
from tests.support.gateway import PorticoProcess, run_portico, wait_for, write_config
from tests.support.receivers import Receiver, running_receiver
from tests.support.upstreams import Upstream

from portico.events.signing import generate_secret
from portico.identity.apikeys import generate_key
from portico.store.database import Database

SECRET = generate_secret()
KEY = generate_key()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


def publish_config(upstream_url: str, webhook_url: str) -> dict[str, Any]:
    tenants = json.loads(json.dumps(TENANTS))
    tenants["acme"]["consumers"]["billing"] = {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}
    return {
        "services": {"orders": {"targets": [upstream_url], "retries": 0}},
        "tenants": tenants,
        "routes": [
            {
                "name": "create-order",
                "match": {"path": "/orders", "methods": ["POST"]},
                "service": "orders",
                "policies": [{"type": "publish", "event": "order.created", "data": "request"}],
            },
            {
                "name": "status",
                "match": {"path": "/status/{code}"},
                "service": "orders",
                "policies": [{"type": "publish", "event": "order.shipped", "pointer": "/status"}],
            },
            {
                "name": "echo",
                "match": {"path": "/echo"},
                "service": "orders",
                "policies": [
                    {"type": "publish", "event": "order.shipped", "pointer": "/method"},
                    {"type": "publish", "event": "invoice.paid", "pointer": "/nothing/here"},
                ],
            },
            {
                "name": "guarded",
                "match": {"path": "/guarded"},
                "service": "orders",
                "policies": [
                    {"type": "auth", "methods": ["api_key"]},
                    {"type": "publish", "event": "order.shipped", "statuses": [200]},
                ],
            },
        ],
        "events": {
            "types": TYPES,
            "endpoints": {
                "orders": {
                    "consumer": "acme/billing",
                    "url": webhook_url,
                    "types": ["order.created"],
                    "secret": SECRET,
                }
            },
            "delivery": {
                "allow_http": True,
                "allow_networks": ["127.0.0.0/8"],
                "schedule": [0, 0.05],
                "poll_interval": 0.05,
            },
        },
    }


@pytest.fixture(scope="module")
def portico(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, receiver: Receiver
) -> Iterator[PorticoProcess]:
    config = publish_config(upstream.url, receiver.url("/orders"))
    process = PorticoProcess(tmp_path_factory.mktemp("publish"), config)
    try:
        yield process
    finally:
        process.stop()


def events_of(portico: PorticoProcess, route: str) -> list[dict[str, Any]]:
    url = f"sqlite:///{portico.tmp_path / 'portico.db'}"
    query = sa.text(
        "SELECT id, type, tenant, idempotency_key, payload FROM events WHERE publisher = :p "
        "ORDER BY created_at"
    )
    with Database(url) as database, database.read() as session:
        rows = session.execute(query, {"p": f"route:{route}"})
        return [{**row._mapping, "data": json.loads(row.payload)["data"]} for row in rows]


def failures(portico: PorticoProcess) -> str:
    text = httpx.get(f"{portico.operations_url}/metrics", trust_env=False).text
    return "\n".join(
        line for line in text.splitlines() if line.startswith("portico_events_publish_failures")
    )


def test_a_post_publishes_its_request_body_which_the_subscriber_receives_signed(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    order = {"order_id": "o-42", "total": 99.5}
    with portico.client() as client:
        assert client.post("/orders", json=order).status_code == 200
    (event,) = wait_for(lambda: events_of(portico, "create-order"))
    assert event["type"] == "order.created" and event["data"] == order
    assert event["tenant"] is None  # a platform event
    receiver.wait_for(1, "/orders")
    (item,) = receiver.at("/orders")
    assert Webhook(SECRET).verify(item.body, item.headers)["data"] == order


def test_a_retry_with_the_same_idempotency_key_publishes_once(portico: PorticoProcess) -> None:
    order = {"order_id": "o-43", "total": 1}
    with portico.client() as client:
        for _ in range(3):
            client.post("/orders", json=order, headers={"Idempotency-Key": "retry-43"})
        client.post("/orders", json=order, headers={"Idempotency-Key": "other"})
    wait_for(
        lambda: len([e for e in events_of(portico, "create-order") if e["idempotency_key"]]) == 2
    )
    keyed = [e for e in events_of(portico, "create-order") if e["idempotency_key"]]
    assert sorted(e["idempotency_key"] for e in keyed) == ["-:other", "-:retry-43"]


def test_the_response_body_and_a_pointer_into_it_are_the_data(portico: PorticoProcess) -> None:
    with portico.client() as client:
        assert client.get("/status/201").status_code == 201
    (event,) = wait_for(lambda: events_of(portico, "status"))
    assert event["type"] == "order.shipped" and event["data"] == 201


def test_an_unsuccessful_upstream_status_publishes_nothing(portico: PorticoProcess) -> None:
    with portico.client() as client:
        assert client.get("/status/500").status_code == 500
        assert client.get("/status/404").status_code == 404
        # A marker that a later publish happened: by then the failed ones would have too.
        assert client.get("/status/202").status_code == 202
    wait_for(lambda: any(e["data"] == 202 for e in events_of(portico, "status")))
    assert {e["data"] for e in events_of(portico, "status")} <= {201, 202}


def test_porticos_own_answer_publishes_nothing(portico: PorticoProcess) -> None:
    with portico.client() as client:
        assert client.get("/guarded").status_code == 401
        allowed = client.get("/guarded", headers={"X-API-Key": KEY.key})
        assert allowed.status_code == 200
    (event,) = wait_for(lambda: events_of(portico, "guarded"))
    assert event["data"]["path"] == "/guarded"
    assert "x-api-key" not in {name.lower() for name, _ in event["data"]["headers"]}


def test_what_cannot_be_published_is_logged_and_counted(portico: PorticoProcess) -> None:
    with portico.client() as client:
        # The schema of order.created needs order_id and total.
        assert client.post("/orders", json={"order_id": 7}).status_code == 200
        assert client.post("/orders", content=b"not json").status_code == 200
        assert client.get("/echo").status_code == 200
    counted = wait_for(
        lambda: (lambda text: text if "pointer-missing" in text and "not-json" in text else None)(
            failures(portico)
        )
    )
    assert (
        'portico_events_publish_failures_total{reason="payload-invalid",route="create-order"} 1.0'
        in counted
    )
    assert 'reason="not-json",route="create-order"} 1.0' in counted
    assert 'reason="pointer-missing",route="echo"} 1.0' in counted
    # The other publish of the same route went through.
    wait_for(lambda: any(e["data"] == "GET" for e in events_of(portico, "echo")))
    log = wait_for(lambda: (lambda t: t if "payload-invalid" in t else None)(portico.log()))
    assert "route create-order: event order.created not published (payload-invalid)" in log
    assert "/data" in log and "request " in log


def test_check_refuses_a_publish_of_a_type_the_catalog_does_not_have(tmp_path: Path) -> None:
    config = publish_config("http://127.0.0.1:9", "http://127.0.0.1:9/hook")
    config["routes"][0]["policies"][0]["event"] = "order.lost"
    write_config(tmp_path / "portico.yaml", config)
    done = run_portico("check", "portico.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "no event type 'order.lost' in events.types" in done.stderr + done.stdout
    del config["events"]
    write_config(tmp_path / "portico.yaml", config)
    done = run_portico("check", "portico.yaml", cwd=tmp_path)
    assert "the publish policy needs an events section" in done.stderr + done.stdout
