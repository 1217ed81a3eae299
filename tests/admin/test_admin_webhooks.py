"""Webhook endpoints and deliveries through the admin API of a real ``portico serve`` that
delivers to a real receiver: creation with the secret shown once, the SSRF rules at
registration, tenant scoping (another tenant's endpoint or delivery is 404), roles, the file's
endpoints read-only, dead letters redelivered one by one and by time range, rotation, and no
secret in any list, read or audit entry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from tests.admin.conftest import EventsAdmin

PROBLEMS = "https://portico.dev/problems/"


def _type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return str(response.json()["type"]).removeprefix(PROBLEMS)


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.05)


def create(
    events_admin: EventsAdmin, path: str, consumer: str = "acme/billing", **fields: Any
) -> dict[str, Any]:
    body = {"consumer": consumer, "url": events_admin.receiver.url(path), **fields}
    with events_admin.client("operator") as http:
        response = http.post("/webhook-endpoints", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def publish(events_admin: EventsAdmin, data: dict[str, Any], **fields: Any) -> str:
    with events_admin.client("operator") as http:
        response = http.post("/events", json={"type": "order.created", "data": data, **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def deliveries(events_admin: EventsAdmin, **query: Any) -> list[dict[str, Any]]:
    with events_admin.client("admin") as http:
        response = http.get("/webhook-deliveries", params=query)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def audit_text(events_admin: EventsAdmin) -> str:
    with events_admin.client("admin") as http:
        response = http.get("/audit-log", params={"limit": 200})
    assert response.status_code == 200
    return response.text


# -- creating, reading, secrets ---------------------------------------------------------------


def test_a_created_endpoint_shows_its_secret_once_and_never_again(
    events_admin: EventsAdmin,
) -> None:
    created = create(events_admin, "/once", description="once", types=["order.*"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["consumer"] == "acme/billing" and created["tenant"] == "acme"
    assert created["source"] == "admin" and created["types"] == ["order.*"]
    with events_admin.client("viewer") as http:
        shown = http.get(f"/webhook-endpoints/{created['id']}")
        listed = http.get("/webhook-endpoints", params={"limit": 200})
    assert shown.status_code == 200 and "secret" not in shown.json()
    assert shown.headers["etag"]
    assert created["id"] in {item["id"] for item in listed.json()["items"]}
    for text in (shown.text, listed.text, audit_text(events_admin)):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text


def test_the_secret_created_signs_what_the_receiver_gets(events_admin: EventsAdmin) -> None:
    created = create(events_admin, "/signed", types=["order.created"])
    event_id = publish(events_admin, {"order_id": "o-signed"}, tenant="acme")
    events_admin.receiver.wait_for(1, "/signed")
    got = events_admin.receiver.at("/signed")[0]
    assert got.id == event_id
    # The Standard Webhooks library verifies it with the secret the admin API gave once.
    verified = Webhook(created["secret"]).verify(got.body, got.headers)
    assert verified["data"] == {"order_id": "o-signed"}


def test_rotating_a_secret_signs_with_both_during_the_overlap_and_audits_no_secret(
    events_admin: EventsAdmin,
) -> None:
    created = create(events_admin, "/rotated", types=["order.created"])
    with events_admin.client("operator") as http:
        rotated = http.post(
            f"/webhook-endpoints/{created['id']}/rotate-secret", json={"overlap": 600}
        )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    assert rotated.json()["previous_secrets_valid_until"]
    publish(events_admin, {"order_id": "o-rotated"}, tenant="acme")
    events_admin.receiver.wait_for(1, "/rotated")
    got = events_admin.receiver.at("/rotated")[0]
    assert len(got.signature.split()) == 2
    for secret in (created["secret"], new):
        Webhook(secret).verify(got.body, got.headers)
    text = audit_text(events_admin)
    assert "webhook_endpoint.rotate_secret" in text
    assert new not in text and new.removeprefix("whsec_") not in text


# -- what registration refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "metadata-address"),
        ("https://10.0.0.7/hook", "private-address"),
        ("https://[::ffff:10.0.0.7]/hook", "private-address"),
        ("https://[fe80::1]/hook", "link-local-address"),
        ("ftp://example.com/hook", "scheme-not-allowed"),
        ("https://user:pw@example.com/hook", "userinfo-not-allowed"),
        ("https://2130706433/hook", "invalid-url"),
    ],
)
def test_an_endpoint_url_the_ssrf_rules_refuse_is_not_registered(
    events_admin: EventsAdmin, url: str, reason: str
) -> None:
    with events_admin.client("operator") as http:
        response = http.post("/webhook-endpoints", json={"consumer": "acme/billing", "url": url})
        listed = http.get("/webhook-endpoints", params={"limit": 200})
    assert response.status_code == 422
    assert _type(response) == "endpoint-refused"
    body = response.json()
    assert body["reason"] == reason
    assert [e["pointer"] for e in body["errors"]] == ["/url"]
    assert url not in listed.text


def test_unknown_types_and_a_bad_filter_are_each_named(events_admin: EventsAdmin) -> None:
    body = {
        "consumer": "acme/billing",
        "url": events_admin.receiver.url("/x"),
        "types": ["order.created", "order.lost"],
        "filter": {"data.total": {"between": [1, 2]}, "data.country": {"in": "FR"}},
    }
    with events_admin.client("operator") as http:
        response = http.post("/webhook-endpoints", json=body)
    assert response.status_code == 422 and _type(response) == "endpoint-refused"
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers == {"/types/1", "/filter/data.total/between", "/filter/data.country/in"}


@pytest.mark.parametrize(
    ("content", "pointer"),
    [
        (b'{"consumer": "acme/billing", "url": ', ""),
        (b'{"consumer": "acme/billing", "url": "https://example.com", "nope": 1}', "/nope"),
        (b'{"consumer": "acme/billing", "url": "https://example.com", "types": []}', "/types"),
        (b'{"consumer": "nobody/here", "url": "https://example.com"}', "/consumer"),
        (
            b'{"consumer": "acme/billing", "url": "https://example.com", "concurrency": 0}',
            "/concurrency",
        ),
    ],
)
def test_a_malformed_creation_is_a_validation_error_naming_the_place(
    events_admin: EventsAdmin, content: bytes, pointer: str
) -> None:
    with events_admin.client("operator") as http:
        response = http.post(
            "/webhook-endpoints", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert _type(response) == "validation-failed"
    assert any(e["pointer"].startswith(pointer) for e in response.json()["errors"])


def test_a_change_is_checked_like_a_creation_and_audited_before_and_after(
    events_admin: EventsAdmin,
) -> None:
    created = create(events_admin, "/changed")
    path = f"/webhook-endpoints/{created['id']}"
    with events_admin.client("operator") as http:
        refused = http.patch(path, json={"url": "https://127.0.0.1.nip.io:0/x"})
        private = http.patch(path, json={"url": "https://192.168.1.1/x"})
        removed = http.patch(path, json={"url": None})
        changed = http.patch(
            path, json={"description": "new", "ordering": {"key": "data.order_id"}, "rate_limit": 5}
        )
        cleared = http.patch(path, json={"ordering": None})
    assert refused.status_code == 422 and refused.json()["reason"] == "bad-port"
    assert private.status_code == 422 and private.json()["reason"] == "private-address"
    assert removed.status_code == 400 and removed.json()["errors"][0]["pointer"] == "/url"
    assert changed.status_code == 200, changed.text
    assert changed.json()["ordering"] == {"key": "data.order_id"}
    assert changed.json()["rate_limit"] == 5
    assert cleared.json()["ordering"] is None and cleared.json()["description"] == "new"
    with events_admin.client("admin") as http:
        entries = http.get(
            "/audit-log", params={"entity": created["id"], "action": "webhook_endpoint.update"}
        ).json()["items"]
    assert len(entries) == 2
    assert entries[-1]["before"]["ordering"] is None
    assert entries[-1]["after"]["ordering"] == {"key": "data.order_id"}


def test_a_change_with_a_stale_etag_is_refused_with_412_and_changes_nothing(
    events_admin: EventsAdmin,
) -> None:
    created = create(events_admin, "/conditional")
    path = f"/webhook-endpoints/{created['id']}"
    with events_admin.client("operator") as http:
        read = http.get(path)
        etag = read.headers["etag"]
        # Someone else changes it after it was read.
        other = http.patch(path, json={"description": "theirs"}, headers={"If-Match": etag})
        assert other.status_code == 200, other.text
        assert other.headers["etag"] != etag
        for method, suffix, body in (
            ("PATCH", "", {"description": "mine"}),
            ("POST", "/rotate-secret", {}),
            ("POST", "/disable", None),
            ("POST", "/enable", None),  # already enabled: still a stale condition
            ("DELETE", "", None),
        ):
            stale = http.request(method, path + suffix, json=body, headers={"If-Match": etag})
            assert stale.status_code == 412, (method, suffix, stale.text)
            assert _type(stale) == "precondition-failed"
            assert stale.headers["etag"] == other.headers["etag"]
        now = http.get(path)
        assert now.json()["description"] == "theirs" and not now.json()["disabled"]
        # The current ETag (or *) lets the change through.
        fresh = http.patch(
            path, json={"description": "mine"}, headers={"If-Match": now.headers["etag"]}
        )
        assert fresh.status_code == 200 and fresh.json()["description"] == "mine"
        assert http.delete(path, headers={"If-Match": "*"}).status_code == 204
    with events_admin.client("admin") as http:
        entries = http.get("/audit-log", params={"entity": created["id"]}).json()["items"]
    # Newest first: nothing refused was written.
    assert [e["action"] for e in entries] == [
        "webhook_endpoint.delete",
        "webhook_endpoint.update",
        "webhook_endpoint.update",
        "webhook_endpoint.create",
    ]


# -- who may do what -------------------------------------------------------------------------------


def test_a_viewer_writes_nothing(events_admin: EventsAdmin) -> None:
    created = create(events_admin, "/viewed")
    path = f"/webhook-endpoints/{created['id']}"
    with events_admin.client("viewer") as http:
        answers = [
            http.post(
                "/webhook-endpoints", json={"consumer": "acme/billing", "url": "https://e.com"}
            ),
            http.patch(path, json={"description": "x"}),
            http.delete(path),
            http.post(f"{path}/rotate-secret"),
            http.post(f"{path}/disable"),
            http.post(f"{path}/enable"),
            http.post(f"{path}/redeliver", json={"since": "0", "until": "1"}),
            http.post("/webhook-deliveries/1/redeliver"),
        ]
        still = http.get(path)
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert {_type(a) for a in answers} == {"insufficient-role"}
    assert still.json() == {k: v for k, v in created.items() if k != "secret"}


def test_a_tenant_scoped_token_cannot_reach_another_tenants_endpoint_or_delivery(
    events_admin: EventsAdmin,
) -> None:
    theirs = create(events_admin, "/globex", consumer="globex/app", types=["order.created"])
    publish(events_admin, {"order_id": "o-globex"}, tenant="globex")
    delivery = eventually(lambda: deliveries(events_admin, endpoint_id=theirs["id"]))[0]
    path = f"/webhook-endpoints/{theirs['id']}"
    with events_admin.client("acme-operator") as http:
        answers = [
            http.get(path),
            http.patch(path, json={"description": "mine now"}),
            http.delete(path),
            http.post(f"{path}/rotate-secret"),
            http.post(f"{path}/disable"),
            http.post(f"{path}/redeliver", json={"since": "0", "until": "9999999999"}),
            http.get(f"/webhook-endpoints/{theirs['id'].upper()}"),
        ]
        found_delivery = http.get(f"/webhook-deliveries/{delivery['id']}")
        redelivered = http.post(f"/webhook-deliveries/{delivery['id']}/redeliver")
        created = http.post(
            "/webhook-endpoints", json={"consumer": "globex/app", "url": "https://e.com"}
        )
        lists = [
            http.get("/webhook-endpoints"),
            http.get("/webhook-endpoints", params={"tenant": "globex"}),
            http.get("/webhook-endpoints", params={"consumer": "globex/app"}),
            http.get("/webhook-deliveries", params={"endpoint_id": theirs["id"]}),
            http.get("/webhook-deliveries", params={"consumer": "globex/app"}),
        ]
    assert all(a.status_code == 404 for a in answers), [a.status_code for a in answers]
    assert {_type(a) for a in answers[:6]} == {"endpoint-not-found"}
    assert found_delivery.status_code == 404 and _type(found_delivery) == "delivery-not-found"
    assert redelivered.status_code == 404 and _type(redelivered) == "delivery-not-found"
    assert created.status_code == 400 and created.json()["errors"][0]["pointer"] == "/consumer"
    for listed in lists:
        assert listed.status_code == 200
        assert theirs["id"] not in listed.text and "globex" not in listed.text
    with events_admin.client("admin") as http:
        unchanged = http.get(path).json()
    assert unchanged["description"] is None and unchanged["disabled"] is False


def test_a_tenant_scoped_token_manages_its_tenants_endpoints(events_admin: EventsAdmin) -> None:
    with events_admin.client("acme-operator") as http:
        created = http.post(
            "/webhook-endpoints",
            json={"consumer": "acme/shop", "url": events_admin.receiver.url("/acme-own")},
        )
        assert created.status_code == 201, created.text
        endpoint_id = created.json()["id"]
        listed = http.get("/webhook-endpoints").json()["items"]
        deleted = http.delete(f"/webhook-endpoints/{endpoint_id}")
        gone = http.get(f"/webhook-endpoints/{endpoint_id}")
    assert endpoint_id in {e["id"] for e in listed}
    assert {e["tenant"] for e in listed} == {"acme"}
    assert deleted.status_code == 204
    assert gone.status_code == 404


def test_the_files_endpoints_change_only_in_the_file(events_admin: EventsAdmin) -> None:
    path = "/webhook-endpoints/ep_cfg_audit"
    with events_admin.client("operator") as http:
        shown = http.get(path)
        answers = [
            http.patch(path, json={"description": "x"}),
            http.delete(path),
            http.post(f"{path}/rotate-secret"),
        ]
        disabled = http.post(f"{path}/disable")
        enabled = http.post(f"{path}/enable")
    assert shown.status_code == 200 and shown.json()["source"] == "config"
    assert [a.status_code for a in answers] == [409, 409, 409]
    assert {_type(a) for a in answers} == {"endpoint-read-only"}
    assert disabled.json()["disabled"] is True
    assert enabled.json()["disabled"] is False


# -- dead letters and redelivery ------------------------------------------------------------------


def test_a_dead_delivery_is_listed_with_its_attempts_and_redelivered_once_fixed(
    events_admin: EventsAdmin,
) -> None:
    receiver = events_admin.receiver
    receiver.behaviours["/flaky"].status = 500
    created = create(events_admin, "/flaky", types=["order.created"])
    event_id = publish(events_admin, {"order_id": "o-dead"}, tenant="acme")
    dead = eventually(lambda: deliveries(events_admin, endpoint_id=created["id"], status="dead"))[0]
    assert dead["event_id"] == event_id and dead["attempts"] == 3
    assert dead["last_status"] == 500 and dead["finished_at"]
    with events_admin.client("viewer") as http:
        detail = http.get(f"/webhook-deliveries/{dead['id']}").json()
    assert [a["status"] for a in detail["attempt_log"]] == [500, 500, 500]
    assert detail["attempt_log"][0]["response_body"] == "attempt 1"
    assert detail["event"]["id"] == event_id and '"o-dead"' in detail["event"]["payload"]

    receiver.behaviours["/flaky"].status = 200
    with events_admin.client("operator") as http:
        again = http.post(f"/webhook-deliveries/{dead['id']}/redeliver")
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "pending" and again.json()["attempts"] == 0
    done = eventually(
        lambda: deliveries(events_admin, endpoint_id=created["id"], status="succeeded")
    )[0]
    assert done["id"] == dead["id"]
    got = receiver.at("/flaky")
    assert len(got) == 4 and {item.id for item in got} == {event_id}
    with events_admin.client("operator") as http:
        not_dead = http.post(f"/webhook-deliveries/{dead['id']}/redeliver")
        missing = http.post("/webhook-deliveries/999999999/redeliver")
        not_a_number = http.post("/webhook-deliveries/abc/redeliver")
    assert not_dead.status_code == 409 and _type(not_dead) == "delivery-not-dead"
    assert missing.status_code == 404 and _type(missing) == "delivery-not-found"
    assert not_a_number.status_code == 400
    assert "webhook_delivery.redeliver" in audit_text(events_admin)


def test_bulk_redelivery_takes_the_deliveries_that_died_in_the_range(
    events_admin: EventsAdmin,
) -> None:
    receiver = events_admin.receiver
    receiver.behaviours["/bulk"].status = 503
    created = create(events_admin, "/bulk", types=["order.created"])
    before = time.time()
    for n in range(3):
        publish(events_admin, {"order_id": f"o-bulk-{n}"}, tenant="acme")
    eventually(lambda: len(deliveries(events_admin, endpoint_id=created["id"], status="dead")) == 3)
    path = f"/webhook-endpoints/{created['id']}/redeliver"
    with events_admin.client("operator") as http:
        earlier = http.post(
            path, json={"since": "2001-01-01T00:00:00Z", "until": str(int(before) - 60)}
        )
        backwards = http.post(
            path, json={"since": "2030-01-01T00:00:00Z", "until": "2029-01-01T00:00:00Z"}
        )
        unreadable = http.post(path, json={"since": "yesterday", "until": "2029-01-01T00:00:00Z"})
        local = http.post(
            path, json={"since": "2026-01-01T00:00:00", "until": "2029-01-01T00:00:00Z"}
        )
        receiver.behaviours["/bulk"].status = 200
        done = http.post(
            path, json={"since": str(int(before) - 1), "until": "2100-01-01T00:00:00+00:00"}
        )
    assert earlier.json() == {"redelivered": 0}
    assert backwards.status_code == 400 and backwards.json()["errors"][0]["pointer"] == "/until"
    assert unreadable.status_code == 400 and unreadable.json()["errors"][0]["pointer"] == "/since"
    assert local.status_code == 400 and local.json()["errors"][0]["pointer"] == "/since"
    assert done.json() == {"redelivered": 3}
    eventually(
        lambda: len(deliveries(events_admin, endpoint_id=created["id"], status="succeeded")) == 3
    )


def test_the_delivery_list_filters_and_pages(events_admin: EventsAdmin) -> None:
    created = create(events_admin, "/paged", types=["order.created"])
    for n in range(3):
        publish(events_admin, {"order_id": f"o-page-{n}"}, tenant="acme")
    eventually(lambda: len(deliveries(events_admin, endpoint_id=created["id"])) == 3)
    seen: list[int] = []
    with events_admin.client("viewer") as http:
        url: str | None = f"/webhook-deliveries?endpoint_id={created['id']}&limit=2"
        while url is not None:
            page = http.get(url.removeprefix("/admin/v1"))
            assert page.status_code == 200
            seen += [item["id"] for item in page.json()["items"]]
            url = page.json()["next"]
        bad_cursor = http.get("/webhook-deliveries", params={"cursor": "bm90IGEgY3Vyc29y"})
        bad_since = http.get("/webhook-deliveries", params={"since": "last week"})
        other_type = http.get(
            "/webhook-deliveries",
            params={"endpoint_id": created["id"], "event_type": "order.shipped"},
        )
    assert len(seen) == 3 and seen == sorted(seen, reverse=True)
    assert bad_cursor.status_code == 400 and bad_since.status_code == 400
    assert bad_since.json()["errors"][0]["pointer"] == "/query/since"
    assert other_type.json()["items"] == []


def test_a_disabled_endpoint_receives_nothing_until_enabled(events_admin: EventsAdmin) -> None:
    created = create(events_admin, "/paused", types=["order.created"])
    path = f"/webhook-endpoints/{created['id']}"
    with events_admin.client("operator") as http:
        disabled = http.post(f"{path}/disable")
    assert disabled.json()["disabled"] is True
    assert disabled.json()["disabled_reason"] == "disabled by an operator"
    publish(events_admin, {"order_id": "o-paused"}, tenant="acme")
    # Published to a disabled endpoint: no delivery is queued for it (nothing reaches it).
    assert deliveries(events_admin, endpoint_id=created["id"]) == []
    with events_admin.client("operator") as http:
        enabled = http.post(f"{path}/enable")
        again = http.post(f"{path}/enable")
    assert enabled.json()["disabled"] is False and again.status_code == 200
    publish(events_admin, {"order_id": "o-resumed"}, tenant="acme")
    events_admin.receiver.wait_for(1, "/paused")
    assert [r.json["data"]["order_id"] for r in events_admin.receiver.at("/paused")] == [
        "o-resumed"
    ]
