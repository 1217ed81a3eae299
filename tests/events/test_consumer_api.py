"""The consumer webhooks API on a real ``portico serve``: a consumer publishes its events and
manages its own endpoints, secrets and deliveries with its own API key, over real sockets; the
webhooks reach a real receiver and verify with the ``standardwebhooks`` library.

And the ways around it: no or wrong credentials, a missing scope, another consumer's ids (404,
never 403), header spellings and duplicates, path tricks, method overrides, SSRF URLs, bodies
too large, not JSON or refused by their schema (nothing stored)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tests.events.harness import TYPES, served_config
from tests.support.gateway import (
    PorticoProcess,
    RawConnection,
    check_problem,
    check_raw_problem,
    wait_for,
)
from tests.support.receivers import Receiver, running_receiver

from portico.events.signing import generate_secret
from portico.identity.apikeys import NewApiKey, generate_key
from portico.store.database import Database

P = "https://portico.dev/problems/"
API = "/webhooks/v1"
CONFIG_SECRET = generate_secret()
ORDER = {"order_id": "o1", "total": 3}


class Keys:
    billing = generate_key()  # acme/billing: publishes and manages
    crm = generate_key()  # acme/crm: manages, cannot publish
    erp = generate_key()  # globex/erp: publishes and manages


def _consumer(key: NewApiKey, scopes: list[str]) -> dict[str, Any]:
    return {"scopes": scopes, "api_keys": [{"id": key.id, "sha256": key.sha256}]}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def portico(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[PorticoProcess]:
    tmp_path = tmp_path_factory.mktemp("consumer-api")
    tenants = {
        "acme": {
            "consumers": {
                "billing": _consumer(Keys.billing, ["events:publish"]),
                "crm": _consumer(Keys.crm, []),
            }
        },
        "globex": {"consumers": {"erp": _consumer(Keys.erp, ["events:publish"])}},
    }
    endpoint = {
        "consumer": "acme/billing",
        "url": receiver.url("/audit"),
        "types": ["invoice.*"],
        "secret": CONFIG_SECRET,
    }
    events = {"types": TYPES, "endpoints": {"audit": endpoint}}
    config = served_config(tmp_path, tenants, events, schedule=[0, 0.05])
    process = PorticoProcess(tmp_path, config)
    try:
        yield process
    finally:
        process.stop()


def api(portico: PorticoProcess, key: NewApiKey | None = None) -> httpx.Client:
    headers = {"X-API-Key": key.key} if key is not None else {}
    return portico.client(headers=headers)


def register(portico: PorticoProcess, key: NewApiKey, url: str, **fields: Any) -> dict[str, Any]:
    with api(portico, key) as client:
        response = client.post(f"{API}/endpoints", json={"url": url, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def events_count(portico: PorticoProcess) -> int:
    url = f"sqlite:///{portico.tmp_path / 'portico.db'}"
    with Database(url) as database, database.read() as session:
        return int(session.execute(sa.text("SELECT count(*) FROM events")).scalar_one())


# -- authentication and scopes ---------------------------------------------------------------------


def test_without_credentials_the_api_answers_401_with_a_challenge(portico: PorticoProcess) -> None:
    with api(portico) as client:
        response = client.get(f"{API}/endpoints")
    check_problem(response, 401, P + "unauthorized")
    assert "ApiKey" in response.headers["www-authenticate"]


def test_a_wrong_key_is_refused_like_an_unknown_one(portico: PorticoProcess) -> None:
    forged = Keys.billing.key[:-4] + "AAAA"
    with portico.client(headers={"X-API-Key": forged}) as client:
        check_problem(client.get(f"{API}/endpoints"), 401, P + "invalid-credentials")
    with portico.client() as client:
        unknown = client.get(f"{API}/endpoints", headers={"X-API-Key": "pk_nope_nope"})
        check_problem(unknown, 401, P + "invalid-credentials")


def test_the_key_is_read_in_any_header_spelling_and_never_from_the_query(
    portico: PorticoProcess,
) -> None:
    with portico.client() as client:
        for headers in (
            {"x-api-key": Keys.billing.key},
            {"X-Api-Key": Keys.billing.key},
            {"Authorization": f"ApiKey {Keys.billing.key}"},
        ):
            assert client.get(f"{API}/event-types", headers=headers).status_code == 200
        in_query = client.get(f"{API}/event-types", params={"api_key": Keys.billing.key})
        check_problem(in_query, 401, P + "unauthorized")


def test_two_api_key_fields_are_not_taken(portico: PorticoProcess) -> None:
    with RawConnection(portico.port) as conn:
        conn.send(
            (
                f"GET {API}/endpoints HTTP/1.1\r\nHost: x\r\n"
                f"X-API-Key: {Keys.crm.key}\r\nX-API-Key: {Keys.billing.key}\r\n\r\n"
            ).encode()
        )
        response = conn.read_response()
    assert response.status in (400, 401), response
    assert response.json()["type"] in (P + "bad-request", P + "invalid-credentials")


def test_publishing_needs_the_publish_scope(portico: PorticoProcess) -> None:
    before = events_count(portico)
    with api(portico, Keys.crm) as client:
        response = client.post(f"{API}/events", json={"type": "order.created", "data": ORDER})
    check_problem(response, 403, P + "insufficient-scope")
    assert 'scope="events:publish"' in response.headers["www-authenticate"]
    assert events_count(portico) == before


# -- the catalog and publishing ----------------------------------------------------------------


def test_the_catalog_lists_each_type_with_its_schema(portico: PorticoProcess) -> None:
    with api(portico, Keys.crm) as client:
        body = client.get(f"{API}/event-types").json()
    by_name = {item["name"]: item for item in body["items"]}
    assert by_name["order.created"]["schema"] == TYPES["order.created"]["schema"]
    assert by_name["order.created"]["version"] == "1"
    assert "endpoint.disabled" in by_name  # Portico's own, subscribable
    assert body["next_cursor"] is None and body["next"] is None


def test_a_publish_is_committed_then_answered_202_and_a_repeat_is_the_original(
    portico: PorticoProcess,
) -> None:
    with api(portico, Keys.billing) as client:
        first = client.post(
            f"{API}/events",
            json={"type": "order.created", "data": ORDER},
            headers={"Idempotency-Key": "order-o1"},
        )
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        again = client.post(
            f"{API}/events",
            json={"type": "order.created", "data": ORDER},
            headers={"Idempotency-Key": "order-o1"},
        )
        assert again.status_code == 202
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        by_id = client.post(
            f"{API}/events", json={"type": "order.created", "data": ORDER, "id": "evt-77"}
        )
        by_id_again = client.post(
            f"{API}/events", json={"type": "order.created", "data": ORDER, "id": "evt-77"}
        )
        assert by_id_again.json()["id"] == by_id.json()["id"]
    # Another consumer's key of the same text is its own: a different event.
    with api(portico, Keys.erp) as client:
        other = client.post(
            f"{API}/events",
            json={"type": "order.created", "data": ORDER},
            headers={"Idempotency-Key": "order-o1"},
        )
    assert other.json()["id"] != first.json()["id"]


def test_a_payload_its_schema_refuses_is_422_with_pointers_and_nothing_is_stored(
    portico: PorticoProcess,
) -> None:
    before = events_count(portico)
    with api(portico, Keys.billing) as client:
        invalid = client.post(
            f"{API}/events", json={"type": "order.created", "data": {"order_id": 5}}
        )
        problem = check_problem(invalid, 422, P + "payload-invalid")
        pointers = {error["pointer"] for error in problem["errors"]}
        assert "/data/order_id" in pointers and "/data" in pointers
        unknown = client.post(f"{API}/events", json={"type": "order.lost", "data": {}})
        check_problem(unknown, 422, P + "event-type-unknown")
        internal = client.post(
            f"{API}/events",
            json={
                "type": "endpoint.disabled",
                "data": {"endpoint_id": "x", "url": "y", "reason": "z"},
            },
        )
        check_problem(internal, 422, P + "event-type-unknown")
    assert events_count(portico) == before


def test_bodies_that_are_not_json_or_too_large_are_refused(portico: PorticoProcess) -> None:
    with api(portico, Keys.billing) as client:
        bad = client.post(
            f"{API}/events",
            content=b'{"type": "order.created",',
            headers={"content-type": "application/json"},
        )
        check_problem(bad, 400, P + "validation-failed")
        twice = client.post(
            f"{API}/events",
            content=b'{"type": "order.shipped", "type": "order.created", "data": {}}',
            headers={"content-type": "application/json"},
        )
        check_problem(twice, 400, P + "validation-failed")
        nan = client.post(
            f"{API}/events",
            content=b'{"type": "order.shipped", "data": NaN}',
            headers={"content-type": "application/json"},
        )
        check_problem(nan, 400, P + "validation-failed")
        form = client.post(f"{API}/events", data={"type": "order.shipped"})
        check_problem(form, 415, P + "unsupported-media-type")
        extra = client.post(
            f"{API}/events", json={"type": "order.shipped", "data": {}, "tenant": "globex"}
        )
        problem = check_problem(extra, 400, P + "validation-failed")
        assert problem["errors"][0]["pointer"] == "/tenant"
        huge = client.post(
            f"{API}/events", json={"type": "order.shipped", "data": {"x": "a" * 400_000}}
        )
        check_problem(huge, 413, P + "request-too-large")


# -- endpoints and deliveries ------------------------------------------------------------------


def test_a_registered_endpoint_receives_its_tenants_events_signed_with_its_secret(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    created = register(portico, Keys.billing, receiver.url("/mine"), types=["order.*"])
    assert created["secret"].startswith("whsec_")
    assert created["consumer"] == "acme/billing"
    with api(portico, Keys.billing) as client:
        listed = client.get(f"{API}/endpoints").json()["items"]
        assert created["id"] in {e["id"] for e in listed}
        assert all("secret" not in e for e in listed)
        # A platform-wide publish of another tenant does not reach acme's endpoint.
    with api(portico, Keys.erp) as client:
        client.post(f"{API}/events", json={"type": "order.shipped", "data": {"from": "globex"}})
    with api(portico, Keys.billing) as client:
        mine = client.post(f"{API}/events", json={"type": "order.shipped", "data": {"n": 1}})
    receiver.wait_for(1, "/mine")
    (item,) = receiver.at("/mine")
    assert item.id == mine.json()["id"]
    assert Webhook(created["secret"]).verify(item.body, item.headers)["data"] == {"n": 1}
    with api(portico, Keys.billing) as client:
        deliveries = wait_for(
            lambda: [
                d
                for d in client.get(f"{API}/endpoints/{created['id']}/deliveries").json()["items"]
                if d["status"] == "succeeded"
            ]
        )
        (delivery,) = deliveries
        detail = client.get(f"{API}/deliveries/{delivery['id']}").json()
    assert detail["event_id"] == item.id
    assert detail["attempts"] == 1 and detail["attempt_log"][0]["status"] == 200


def test_lists_are_pages_with_a_cursor_and_a_link_to_the_next(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    made = {register(portico, Keys.crm, receiver.url(f"/page{n}"))["id"] for n in range(3)}
    with api(portico, Keys.crm) as client:
        seen: list[str] = []
        url: str | None = f"{API}/endpoints?limit=2"
        while url is not None:
            response = client.get(url)
            body = response.json()
            seen.extend(item["id"] for item in body["items"])
            assert len(body["items"]) <= 2
            url = body["next"]
            if url is not None:
                assert body["next_cursor"] is not None and "limit=2" in url
                assert response.headers["link"] == f'<{url}>; rel="next"'
            else:
                assert body["next_cursor"] is None and "link" not in response.headers
        assert made <= set(seen) and len(seen) == len(set(seen))
        for query, pointer in (("limit=0", "/query/limit"), ("limit=201", "/query/limit")):
            refused = client.get(f"{API}/endpoints?{query}")
            assert (
                check_problem(refused, 400, P + "validation-failed")["errors"][0]["pointer"]
                == pointer
            )
        some = next(iter(made))
        bad = client.get(f"{API}/endpoints/{some}/deliveries?cursor=not-an-id")
        assert check_problem(bad, 400, P + "validation-failed")["errors"][0]["pointer"] == (
            "/query/cursor"
        )


def test_another_consumers_endpoint_and_deliveries_are_404_to_every_operation(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    theirs = register(portico, Keys.erp, receiver.url("/erp"))
    with api(portico, Keys.erp) as client:
        client.post(f"{API}/events", json={"type": "order.shipped", "data": {}})
    receiver.wait_for(1, "/erp")
    with api(portico, Keys.erp) as client:
        delivery_id = wait_for(
            lambda: client.get(f"{API}/endpoints/{theirs['id']}/deliveries").json()["items"]
        )[0]["id"]
    ep = f"{API}/endpoints/{theirs['id']}"
    with api(portico, Keys.billing) as client:
        for method, path, body in (
            ("GET", ep, None),
            ("PATCH", ep, {"url": receiver.url("/stolen")}),
            ("DELETE", ep, None),
            ("POST", f"{ep}/rotate-secret", {}),
            ("POST", f"{ep}/disable", None),
            ("POST", f"{ep}/enable", None),
            ("POST", f"{ep}/redeliver", {}),
            ("GET", f"{ep}/deliveries", None),
        ):
            response = client.request(method, path, json=body)
            check_problem(response, 404, P + "endpoint-not-found")
        for method, path in (
            ("GET", f"{API}/deliveries/{delivery_id}"),
            ("POST", f"{API}/deliveries/{delivery_id}/redeliver"),
        ):
            check_problem(client.request(method, path), 404, P + "delivery-not-found")
        check_problem(client.get(f"{API}/deliveries/99999999"), 404, P + "delivery-not-found")
        check_problem(client.get(f"{API}/endpoints/ep_nothing"), 404, P + "endpoint-not-found")
        assert theirs["id"] not in {e["id"] for e in client.get(f"{API}/endpoints").json()["items"]}
    with api(portico, Keys.erp) as client:
        still = client.get(ep).json()
    assert still["url"] == receiver.url("/erp") and still["disabled"] is False


def test_an_endpoint_the_ssrf_rules_refuse_is_not_registered(portico: PorticoProcess) -> None:
    with api(portico, Keys.billing) as client:
        before = len(client.get(f"{API}/endpoints").json()["items"])
        for url in (
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.8/hook",
            "http://[::1]:8080/hook",
            "http://[::ffff:10.0.0.1]/hook",
            "http://2130706433/hook",
            "ftp://example.com/hook",
        ):
            response = client.post(f"{API}/endpoints", json={"url": url})
            problem = check_problem(response, 422, P + "endpoint-refused")
            assert problem["errors"][0]["pointer"] == "/url", (url, problem)
        bad_filter = client.post(
            f"{API}/endpoints",
            json={"url": "http://127.0.0.1:9/x", "filter": {"data.total": {"between": 1}}},
        )
        problem = check_problem(bad_filter, 422, P + "endpoint-refused")
        assert problem["errors"][0]["pointer"].startswith("/filter/")
        unknown_type = client.post(
            f"{API}/endpoints", json={"url": "http://127.0.0.1:9/x", "types": ["order.lost"]}
        )
        problem = check_problem(unknown_type, 422, P + "endpoint-refused")
        assert problem["errors"][0]["pointer"] == "/types/0"
        assert len(client.get(f"{API}/endpoints").json()["items"]) == before


def test_a_rotation_keeps_the_old_secret_signing_during_the_overlap(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    created = register(portico, Keys.billing, receiver.url("/rotating"), types=["invoice.paid"])
    with api(portico, Keys.billing) as client:
        rotated = client.post(
            f"{API}/endpoints/{created['id']}/rotate-secret", json={"overlap": 3600}
        )
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != created["secret"]
        assert rotated.json()["previous_secrets_valid_until"]
        client.post(f"{API}/events", json={"type": "invoice.paid", "data": {"n": 2}})
    receiver.wait_for(1, "/rotating")
    (item,) = receiver.at("/rotating")
    assert len(item.signature.split(" ")) == 2
    assert Webhook(created["secret"]).verify(item.body, item.headers)
    assert Webhook(new_secret).verify(item.body, item.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(item.body, item.headers)


def test_patch_disable_enable_and_delete_of_ones_own_endpoint(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    created = register(portico, Keys.crm, receiver.url("/crm"))
    ep = f"{API}/endpoints/{created['id']}"
    with api(portico, Keys.crm) as client:
        patched = client.patch(
            ep, json={"description": "CRM sync", "ordering": {"key": "data.order_id"}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["description"] == "CRM sync"
        assert patched.json()["ordering"] == {"key": "data.order_id"}
        check_problem(client.patch(ep, json={"url": None}), 400, P + "validation-failed")
        check_problem(
            client.patch(ep, json={"url": "http://169.254.169.254/"}), 422, P + "endpoint-refused"
        )
        assert client.post(f"{ep}/disable").json()["disabled"] is True
        assert client.post(f"{ep}/enable").json()["disabled"] is False
        assert client.delete(ep).status_code == 204
        check_problem(client.get(ep), 404, P + "endpoint-not-found")


def test_the_config_files_endpoints_are_read_only_to_their_owner(portico: PorticoProcess) -> None:
    ep = f"{API}/endpoints/ep_cfg_audit"
    with api(portico, Keys.billing) as client:
        assert client.get(ep).json()["source"] == "config"
        for method, path, body in (
            ("PATCH", ep, {"description": "mine now"}),
            ("DELETE", ep, None),
            ("POST", f"{ep}/rotate-secret", {}),
            ("POST", f"{ep}/disable", None),
        ):
            check_problem(client.request(method, path, json=body), 409, P + "endpoint-read-only")


def test_a_dead_delivery_is_redelivered_by_id_and_by_time_range(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    receiver.behaviours["/dying"].status = 500
    created = register(portico, Keys.billing, receiver.url("/dying"), types=["order.shipped"])
    deliveries = f"{API}/endpoints/{created['id']}/deliveries"
    with api(portico, Keys.billing) as client:
        client.post(f"{API}/events", json={"type": "order.shipped", "data": {"n": 3}})
        (dead,) = wait_for(
            lambda: client.get(deliveries, params={"status": "dead"}).json()["items"], timeout=30
        )
        detail = client.get(f"{API}/deliveries/{dead['id']}").json()
        assert detail["attempts"] == len(detail["attempt_log"]) == 2
        receiver.behaviours["/dying"].status = 200
        again = client.post(f"{API}/deliveries/{dead['id']}/redeliver")
        assert again.status_code == 200
        assert again.json()["id"] == dead["id"] and again.json()["attempts"] == 0
        wait_for(lambda: client.get(deliveries, params={"status": "succeeded"}).json()["items"])
        # Succeeded (or pending): nothing to redeliver, as the admin API answers.
        twice = client.post(f"{API}/deliveries/{dead['id']}/redeliver")
        assert check_problem(twice, 409, P + "delivery-not-dead")["detail"].endswith(
            "only a dead or cancelled delivery is redelivered"
        )
        receiver.behaviours["/dying"].status = 500
        client.post(f"{API}/events", json={"type": "order.shipped", "data": {"n": 4}})
        wait_for(lambda: client.get(deliveries, params={"status": "dead"}).json()["items"])
        receiver.behaviours["/dying"].status = 200
        future = client.post(
            f"{API}/endpoints/{created['id']}/redeliver", json={"since": "2999-01-01T00:00:00Z"}
        )
        assert future.json() == {"redelivered": 0}
        bulk = client.post(
            f"{API}/endpoints/{created['id']}/redeliver",
            json={"since": 0, "until": "2999-01-01T00:00:00+00:00"},
        )
        assert bulk.json() == {"redelivered": 1}
        wait_for(
            lambda: len(client.get(deliveries, params={"status": "succeeded"}).json()["items"]) == 2
        )
        check_problem(
            client.get(deliveries, params={"since": "yesterday"}), 400, P + "validation-failed"
        )
        check_problem(
            client.get(deliveries, params={"status": "lost"}), 400, P + "validation-failed"
        )


# -- paths and methods -------------------------------------------------------------------------


def test_path_tricks_do_not_reach_another_resource(portico: PorticoProcess) -> None:
    key = Keys.billing.key
    for target, status, kind in (
        (f"{API}/endpoints/%2e%2e/event-types", 200, None),  # the canonical path: event-types
        (f"{API}/endpoints/ep_cfg_audit%2Fdeliveries", 400, "bad-request"),
        (f"{API}/endpoints/", 200, None),  # the same resource: the caller's own endpoints
        (f"{API}//endpoints", 200, None),
        (f"{API}/endpoints/ep_cfg_audit/../../deliveries/99999999", 404, "delivery-not-found"),
    ):
        with RawConnection(portico.port) as conn:
            conn.send(f"GET {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode())
            response = conn.read_response()
        if kind is None:
            assert response.status == status, (target, response)
            items = response.json()["items"]
            assert all(item.get("consumer", "acme/billing") == "acme/billing" for item in items)
        else:
            check_raw_problem(response, status, P + kind)


def test_a_method_override_header_changes_nothing(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    created = register(portico, Keys.billing, receiver.url("/kept"))
    ep = f"{API}/endpoints/{created['id']}"
    with api(portico, Keys.billing) as client:
        for name in ("X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method"):
            response = client.post(ep, headers={name: "DELETE"})
            check_problem(response, 405, P + "method-not-allowed")
            assert set(response.headers["allow"].replace(" ", "").split(",")) == {
                "GET",
                "HEAD",
                "PATCH",
                "DELETE",
            }
        assert client.get(ep).status_code == 200
        head = client.head(ep)
        assert head.status_code == 200 and head.content == b""
