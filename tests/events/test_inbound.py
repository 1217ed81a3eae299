"""Inbound webhooks on a real ``portico serve``: third-party senders (Standard Webhooks, signed
with the ``standardwebhooks`` library; GitHub- and Stripe-style HMAC; a generic HMAC scheme) post
to the configured paths; what verifies is stored once and republished to the subscribed
endpoints; a replay, a tampered body, an old timestamp and a body too large are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook
from tests.events.harness import TENANTS, TYPES, served_config
from tests.support.gateway import (
    PorticoProcess,
    RawConnection,
    check_problem,
    check_raw_problem,
)
from tests.support.receivers import Receiver, running_receiver

from portico.events.signing import generate_secret
from portico.store.database import Database

P = "https://portico.dev/problems/"
OLD_SECRET = generate_secret()
NEW_SECRET = generate_secret()
GITHUB_SECRET = "gh-hook-secret"
STRIPE_SECRET = "whsec_stripe_test_secret"
CUSTOM_SECRET = "custom-secret"
OUT_SECRET = generate_secret()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def portico(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[PorticoProcess]:
    tmp_path = tmp_path_factory.mktemp("inbound")
    events = {
        "types": {**TYPES, "partner.event": {"description": "From the partner."}},
        "endpoints": {
            "all": {
                "consumer": "acme/billing",
                "url": receiver.url("/republished"),
                "types": ["partner.event"],
                "secret": OUT_SECRET,
            }
        },
        "inbound": {
            "partner": {
                "path": "/hooks/partner",
                "scheme": "standard-webhooks",
                "secrets": [NEW_SECRET, OLD_SECRET],
                "event_type": "partner.event",
                "max_body_size": 2048,
            },
            "github": {
                "path": "/hooks/github",
                "scheme": "github",
                "secrets": [GITHUB_SECRET],
                "id_header": "X-GitHub-Delivery",
                "event_type": "order.shipped",
            },
            "stripe": {
                "path": "/hooks/stripe",
                "scheme": "stripe",
                "secrets": [STRIPE_SECRET],
                "event_type": "invoice.paid",
            },
            "custom": {
                "path": "/hooks/custom",
                "scheme": "hmac",
                "secrets": [CUSTOM_SECRET],
                "header": "X-Signature",
                "algorithm": "sha512",
                "encoding": "base64",
                "template": "{timestamp}:{body}",
                "timestamp_header": "X-Timestamp",
                "event_type": "invoice.paid",
            },
        },
    }
    config = served_config(tmp_path, TENANTS, events, schedule=[0, 0.05])
    process = PorticoProcess(tmp_path, config)
    try:
        yield process
    finally:
        process.stop()


def standard(secret: str, msg_id: str, body: str, at: float | None = None) -> dict[str, str]:
    when = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body),
        "content-type": "application/json",
    }


def published_by(portico: PorticoProcess, source: str) -> list[dict[str, Any]]:
    url = f"sqlite:///{portico.tmp_path / 'portico.db'}"
    query = sa.text("SELECT id, type, tenant, payload FROM events WHERE publisher = :p")
    with Database(url) as database, database.read() as session:
        return [dict(row._mapping) for row in session.execute(query, {"p": f"inbound:{source}"})]


def test_a_standard_webhook_is_stored_once_and_republished(
    portico: PorticoProcess, receiver: Receiver
) -> None:
    body = json.dumps({"invoice": "inv_1", "amount": 12})
    headers = standard(NEW_SECRET, "msg_partner_1", body)
    with portico.client() as client:
        first = client.post("/hooks/partner", content=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["duplicate"] is False
        replay = client.post("/hooks/partner", content=body, headers=headers)
    assert replay.status_code == 200
    assert replay.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    (event,) = [e for e in published_by(portico, "partner") if e["id"] == first.json()["event_id"]]
    assert event["type"] == "partner.event" and event["tenant"] is None
    receiver.wait_for(1, "/republished")
    (item,) = [i for i in receiver.at("/republished") if i.id == event["id"]]
    assert Webhook(OUT_SECRET).verify(item.body, item.headers)["data"] == json.loads(body)


def test_one_signed_with_the_senders_previous_secret_is_accepted(portico: PorticoProcess) -> None:
    body = json.dumps({"rotating": True})
    with portico.client() as client:
        response = client.post(
            "/hooks/partner", content=body, headers=standard(OLD_SECRET, "msg_partner_old", body)
        )
    assert response.status_code == 200, response.text


def test_a_tampered_an_old_or_an_unsigned_webhook_is_401_and_not_stored(
    portico: PorticoProcess,
) -> None:
    before = len(published_by(portico, "partner"))
    body = json.dumps({"amount": 12})
    with portico.client() as client:
        tampered = client.post(
            "/hooks/partner",
            content=body.replace("12", "1200"),
            headers=standard(NEW_SECRET, "msg_t", body),
        )
        problem = check_problem(tampered, 401, P + "webhook-signature-invalid")
        assert problem["reason"] == "no-matching-signature"
        old = client.post(
            "/hooks/partner",
            content=body,
            headers=standard(NEW_SECRET, "msg_old", body, at=time.time() - 600),
        )
        assert check_problem(old, 401, P + "webhook-signature-invalid")["reason"] == (
            "timestamp-out-of-window"
        )
        other = client.post(
            "/hooks/partner", content=body, headers=standard(generate_secret(), "msg_x", body)
        )
        check_problem(other, 401, P + "webhook-signature-invalid")
        bare = client.post("/hooks/partner", content=body)
        assert check_problem(bare, 401, P + "webhook-signature-invalid")["reason"] == (
            "missing-headers"
        )
        headers = list(standard(NEW_SECRET, "msg_dup", body).items())
        headers.append(("webhook-signature", "v1,AAAA"))
        duplicated = client.post("/hooks/partner", content=body, headers=headers)
        assert check_problem(duplicated, 401, P + "webhook-signature-invalid")["reason"] == (
            "duplicate-headers"
        )
    assert len(published_by(portico, "partner")) == before


def test_a_body_over_the_sources_limit_is_413_and_a_get_is_405(portico: PorticoProcess) -> None:
    body = json.dumps({"blob": "x" * 4096})
    with portico.client() as client:
        large = client.post(
            "/hooks/partner", content=body, headers=standard(NEW_SECRET, "msg_big", body)
        )
        check_problem(large, 413, P + "request-too-large")
        get = client.get("/hooks/partner")
        check_problem(get, 405, P + "method-not-allowed")
        assert get.headers["allow"] == "POST"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_the_limit_sent_with_its_head_in_one_write_is_413(
    portico: PorticoProcess, framing: str
) -> None:
    # The whole request in one packet: the body is read before the path (and so the source's
    # limit) is known, under the connection's wider limit; it must still be refused.
    body = json.dumps({"blob": "y" * 4096}).encode()
    fields = standard(NEW_SECRET, f"msg_one_write_{framing}", body.decode())
    if framing == "chunked":
        fields["transfer-encoding"] = "chunked"
        payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        fields["content-length"] = str(len(body))
        payload = body
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    before = len(published_by(portico, "partner"))
    with RawConnection(portico.port) as connection:
        connection.send(
            f"POST /hooks/partner HTTP/1.1\r\nhost: localhost\r\n{head}\r\n".encode() + payload
        )
        check_raw_problem(connection.read_response(), 413, P + "request-too-large")
    assert len(published_by(portico, "partner")) == before


def test_a_signed_body_that_is_not_json_is_400(portico: PorticoProcess) -> None:
    body = "not json"
    with portico.client() as client:
        response = client.post(
            "/hooks/partner", content=body, headers=standard(NEW_SECRET, "msg_text", body)
        )
    check_problem(response, 400, P + "bad-request")


def github(body: bytes, delivery: str, secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "content-type": "application/json",
    }


def test_a_github_style_delivery_is_verified_and_deduplicated_by_its_delivery_id(
    portico: PorticoProcess,
) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    with portico.client() as client:
        first = client.post("/hooks/github", content=body, headers=github(body, "d-1"))
        assert first.status_code == 200, first.text
        again = client.post("/hooks/github", content=body, headers=github(body, "d-1"))
        assert again.json() == {"event_id": first.json()["event_id"], "duplicate": True}
        forged = client.post("/hooks/github", content=body, headers=github(body, "d-2", "guess"))
        check_problem(forged, 401, P + "webhook-signature-invalid")
        headers = github(body, "d-3")
        del headers["X-GitHub-Delivery"]
        check_problem(
            client.post("/hooks/github", content=body, headers=headers), 400, P + "bad-request"
        )
    assert len(published_by(portico, "github")) == 1


def stripe(body: bytes, at: int, secret: str = STRIPE_SECRET) -> dict[str, str]:
    signed = f"{at}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={digest}", "content-type": "application/json"}


def test_a_stripe_style_event_is_verified_with_its_timestamp(portico: PorticoProcess) -> None:
    body = json.dumps({"id": "evt_1", "type": "invoice.paid"}).encode()
    now = int(time.time())
    with portico.client() as client:
        ok = client.post("/hooks/stripe", content=body, headers=stripe(body, now))
        assert ok.status_code == 200, ok.text
        # Without an id header, the body's SHA-256 identifies the message.
        again = client.post("/hooks/stripe", content=body, headers=stripe(body, now + 1))
        assert again.json()["duplicate"] is True
        old = client.post("/hooks/stripe", content=body, headers=stripe(body, now - 3600))
        check_problem(old, 401, P + "webhook-signature-invalid")


def test_the_generic_hmac_scheme_signs_its_template(portico: PorticoProcess) -> None:
    body = json.dumps({"total": 5}).encode()
    at = str(int(time.time()))
    digest = hmac.new(CUSTOM_SECRET.encode(), f"{at}:".encode() + body, hashlib.sha512).digest()
    headers = {
        "X-Signature": base64.b64encode(digest).decode(),
        "X-Timestamp": at,
        "content-type": "application/json",
    }
    with portico.client() as client:
        assert client.post("/hooks/custom", content=body, headers=headers).status_code == 200
        headers["X-Timestamp"] = str(int(at) + 1)
        check_problem(
            client.post("/hooks/custom", content=body, headers=headers),
            401,
            P + "webhook-signature-invalid",
        )
