"""Event types and publishing through the admin API of a real ``portico serve``: the catalog with
each type's schema, publishing checked against it and committed before the 202, idempotency,
tenant rules for scoped tokens, and the catalog's view of the types."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.admin.conftest import EventsAdmin
from tests.admin.test_admin_webhooks import _type, create, deliveries, eventually


def publish(events_admin: EventsAdmin, token: str, body: Any, **kwargs: Any) -> httpx.Response:
    with events_admin.client(token) as http:
        return http.post("/events", json=body, **kwargs)


def test_the_event_types_are_listed_with_their_schema_to_any_token(
    events_admin: EventsAdmin,
) -> None:
    for token in ("viewer", "acme-viewer"):
        with events_admin.client(token) as http:
            response = http.get("/event-types")
        assert response.status_code == 200, response.text
        types = {item["name"]: item for item in response.json()["items"]}
        assert list(types) == ["endpoint.disabled", "order.created", "order.shipped"]
        created = types["order.created"]
        assert created["version"] == "2" and created["owner"] == "team-orders"
        assert created["schema"]["required"] == ["order_id"]
        assert created["operational"] is False
        assert types["endpoint.disabled"]["operational"] is True
        assert types["order.shipped"]["schema"] == {}


def test_the_catalog_lists_the_event_types_for_tokens_of_every_tenant(
    events_admin: EventsAdmin,
) -> None:
    with events_admin.client("viewer") as http:
        listed = http.get("/catalog/event-types")
    with events_admin.client("acme-viewer") as http:
        scoped = http.get("/catalog/event-types")
    assert listed.status_code == 200
    assert [item["name"] for item in listed.json()["items"]] == [
        "endpoint.disabled",
        "order.created",
        "order.shipped",
    ]
    assert scoped.status_code == 403 and _type(scoped) == "tenant-scoped"


def test_a_published_event_is_committed_with_its_deliveries_before_the_answer(
    events_admin: EventsAdmin,
) -> None:
    endpoint = create(events_admin, "/published", types=["order.created"])
    response = publish(
        events_admin,
        "operator",
        {"type": "order.created", "data": {"order_id": "o-1"}, "tenant": "acme"},
    )
    assert response.status_code == 202, response.text
    event = response.json()
    assert event["id"].startswith("msg_") and event["type"] == "order.created"
    assert "idempotent-replayed" not in response.headers
    # The answer came after the commit: the delivery is in the log at once.
    queued = deliveries(events_admin, endpoint_id=endpoint["id"])
    assert [d["event_id"] for d in queued] == [event["id"]]
    events_admin.receiver.wait_for(1, "/published")
    with events_admin.client("admin") as http:
        entries = http.get("/audit-log", params={"entity": event["id"]}).json()["items"]
    assert [e["action"] for e in entries] == ["event.publish"]
    assert entries[0]["detail"]["type"] == "order.created" and entries[0]["tenant"] == "acme"
    assert entries[0]["actor"].startswith("admin-token:")


@pytest.mark.parametrize("how", ["header", "body"])
def test_the_same_idempotency_key_returns_the_original_event(
    events_admin: EventsAdmin, how: str
) -> None:
    endpoint = create(events_admin, f"/idempotent-{how}", types=["order.created"])
    key = f"key-{how}-1"
    body: dict[str, Any] = {
        "type": "order.created",
        "data": {"order_id": "o-idem"},
        "tenant": "acme",
    }
    headers = {}
    if how == "header":
        headers["Idempotency-Key"] = key
    else:
        body["id"] = key
    first = publish(events_admin, "operator", body, headers=headers)
    second = publish(events_admin, "operator", body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert len(deliveries(events_admin, endpoint_id=endpoint["id"])) == 1


def test_an_unknown_type_or_an_invalid_payload_is_refused_and_nothing_is_stored(
    events_admin: EventsAdmin,
) -> None:
    unknown = publish(events_admin, "operator", {"type": "order.lost", "data": {}})
    operational = publish(
        events_admin,
        "operator",
        {"type": "endpoint.disabled", "data": {"endpoint_id": "x", "url": "y", "reason": "z"}},
    )
    invalid = publish(
        events_admin, "operator", {"type": "order.created", "data": {"order_id": 7, "total": "x"}}
    )
    assert unknown.status_code == 422 and _type(unknown) == "event-type-unknown"
    assert unknown.json()["errors"][0]["pointer"] == "/type"
    assert operational.status_code == 422 and _type(operational) == "event-type-unknown"
    assert invalid.status_code == 422 and _type(invalid) == "payload-invalid"
    pointers = {e["pointer"] for e in invalid.json()["errors"]}
    assert pointers == {"/data/order_id", "/data/total"}
    assert deliveries(events_admin, event_type="order.lost") == []


@pytest.mark.parametrize(
    ("content", "pointer"),
    [
        (b'{"type": "order.created", "data": ', ""),
        (b'{"type": "order.created", "data": {}, "extra": 1}', "/extra"),
        (b'{"type": "Order Created", "data": {}}', "/type"),
        (b'{"type": "order.created", "data": {"order_id": "1"}, "tenant": "nobody"}', "/tenant"),
        (b"[]", ""),
    ],
)
def test_a_malformed_publication_is_a_validation_error(
    events_admin: EventsAdmin, content: bytes, pointer: str
) -> None:
    with events_admin.client("operator") as http:
        response = http.post(
            "/events", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert _type(response) == "validation-failed"
    assert any(e["pointer"].startswith(pointer) for e in response.json()["errors"])


def test_a_viewer_publishes_nothing(events_admin: EventsAdmin) -> None:
    response = publish(events_admin, "viewer", {"type": "order.shipped", "data": None})
    assert response.status_code == 403 and _type(response) == "insufficient-role"


def test_a_tenant_scoped_token_publishes_for_its_tenant_only(events_admin: EventsAdmin) -> None:
    ours = create(events_admin, "/scoped-acme", consumer="acme/billing", types=["order.shipped"])
    theirs = create(events_admin, "/scoped-globex", consumer="globex/app", types=["order.shipped"])
    other = publish(events_admin, "acme-operator", {"type": "order.shipped", "tenant": "globex"})
    assert other.status_code == 403 and _type(other) == "tenant-scoped"
    # Without a tenant, the event is the token's tenant's, not a platform event.
    done = publish(events_admin, "acme-operator", {"type": "order.shipped", "data": {"n": 1}})
    assert done.status_code == 202, done.text
    eventually(lambda: deliveries(events_admin, endpoint_id=ours["id"]))
    assert deliveries(events_admin, endpoint_id=theirs["id"]) == []
    with events_admin.client("admin") as http:
        entry = http.get("/audit-log", params={"entity": done.json()["id"]}).json()["items"][0]
    assert entry["tenant"] == "acme"
