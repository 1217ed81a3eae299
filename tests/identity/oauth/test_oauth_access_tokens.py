"""The ``oauth`` method at the gateway: what a route accepts, and the classic JWT attacks."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from tests.support.oauth import (
    BILLING_SECRET,
    ServingGateway,
    StartGateway,
    ed25519_key,
    hs256_token,
    issuer_of,
    rsa_key,
    signed_token,
    token_for,
    unsigned_token,
    valid_claims,
)
from tests.support.upstreams import Upstream

INVALID_TOKEN = 'Bearer realm="portico", error="invalid_token"'


def call(gateway: ServingGateway, token: str, path: str = "/orders") -> Any:
    with gateway.client() as client:
        return client.get(path, headers={"authorization": f"Bearer {token}"})


def assert_rejected(gateway: ServingGateway, upstream: Upstream, token: str) -> None:
    before = upstream.count
    response = call(gateway, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert response.headers["content-type"] == "application/problem+json"
    assert upstream.count == before


def test_a_token_from_the_token_endpoint_is_accepted_many_times(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    statuses = [call(gateway, token).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert upstream.count == 5


def test_the_token_is_not_sent_upstream_unless_the_route_relays_it(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert call(gateway, token).status_code == 200
    assert upstream.received[-1].header("authorization") is None
    assert call(gateway, token, "/relay").status_code == 200
    assert upstream.received[-1].header("authorization") == f"Bearer {token}"
    assert upstream.received[-1].header("x-portico-consumer") == "acme/billing"


def test_a_request_without_credentials_gets_the_bearer_challenge(
    gateway: ServingGateway,
) -> None:
    with gateway.client() as client:
        response = client.get("/orders")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="portico"'


def test_spoofed_identity_headers_are_replaced_by_the_token_identity(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    with gateway.client() as client:
        response = client.get(
            "/orders",
            headers={
                "authorization": f"Bearer {token}",
                "x-portico-consumer": "globex/reports",
                "x-portico-tenant": "globex",
            },
        )
    assert response.status_code == 200
    seen = [(k.lower(), v) for k, v in upstream.received[-1].headers]
    assert ("x-portico-consumer", "acme/billing") in seen
    assert ("x-portico-consumer", "globex/reports") not in seen
    assert ("x-portico-tenant", "globex") not in seen


def test_alg_none_is_rejected(gateway: ServingGateway, upstream: Upstream) -> None:
    signing = gateway.oauth.keyring.signing
    assert signing is not None
    for alg in ("none", "None", "NONE"):
        header = {"alg": alg, "typ": "at+jwt", "kid": signing.kid}
        assert_rejected(gateway, upstream, unsigned_token(header, valid_claims(gateway)))


def test_hs256_signed_with_the_eddsa_public_key_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    signing = gateway.oauth.keyring.signing
    assert signing is not None
    public = signing.private_key.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        signing.public_jwk["x"].encode(),
    ):
        header = {"alg": "HS256", "typ": "at+jwt", "kid": signing.kid}
        assert_rejected(gateway, upstream, hs256_token(header, valid_claims(gateway), secret))


def test_hs256_signed_with_the_rsa_public_key_is_rejected(
    start: StartGateway, upstream: Upstream
) -> None:
    gateway = start(algorithm="RS256")
    signing = gateway.oauth.keyring.signing
    assert signing is not None and signing.algorithm == "RS256"
    pem = signing.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": signing.kid}
    assert_rejected(gateway, upstream, hs256_token(header, valid_claims(gateway), pem))
    # The real key still works: the rejection is about the algorithm, not the gateway.
    assert call(gateway, signed_token(gateway, valid_claims(gateway))).status_code == 200


def test_an_expired_token_is_rejected(gateway: ServingGateway, upstream: Upstream) -> None:
    now = int(time.time())
    claims = valid_claims(gateway, iat=now - 3700, exp=now - 100)
    assert_rejected(gateway, upstream, signed_token(gateway, claims))


def test_a_token_issued_in_the_future_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    now = int(time.time())
    claims = valid_claims(gateway, iat=now + 600, exp=now + 4200)
    assert_rejected(gateway, upstream, signed_token(gateway, claims))


def test_a_token_not_yet_valid_is_rejected(gateway: ServingGateway, upstream: Upstream) -> None:
    claims = valid_claims(gateway, nbf=int(time.time()) + 600)
    assert_rejected(gateway, upstream, signed_token(gateway, claims))


def test_a_token_for_another_audience_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    for audience in ("https://other-api.example", ["https://other-api.example"], None):
        claims = valid_claims(gateway, aud=audience)
        assert_rejected(gateway, upstream, signed_token(gateway, claims))


def test_a_token_naming_another_issuer_is_not_accepted(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    claims = valid_claims(gateway, iss="https://evil.example")
    response = call(gateway, signed_token(gateway, claims))
    # Not ours, so the oauth method does not claim it: the route answers as to no credentials.
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer realm=")
    assert upstream.count == 0


def test_a_token_from_another_issuer_signed_with_its_own_key_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    other = ed25519_key("other-issuer-key")
    forged = jwt.encode(
        valid_claims(gateway),
        other.private,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": other.kid},
    )
    assert_rejected(gateway, upstream, forged)
    # Even with the kid of our key, the signature does not verify.
    signing = gateway.oauth.keyring.signing
    assert signing is not None
    forged = jwt.encode(
        valid_claims(gateway),
        other.private,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": signing.kid},
    )
    assert_rejected(gateway, upstream, forged)


def test_a_tampered_payload_is_rejected(gateway: ServingGateway, upstream: Upstream) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET, scope="orders:write")
    header, _, signature = token.split(".")
    elevated = unsigned_token(
        jwt.get_unverified_header(token),
        {**jwt.decode(token, options={"verify_signature": False}), "scope": "orders:read"},
    ).split(".")[1]
    assert_rejected(gateway, upstream, f"{header}.{elevated}.{signature}")


def test_a_tampered_signature_is_rejected(gateway: ServingGateway, upstream: Upstream) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_rejected(gateway, upstream, f"{head}.{payload}.{flipped}")
    assert_rejected(gateway, upstream, f"{head}.{payload}.")
    # After a good token was cached, its tampered twin is still verified (and refused).
    assert call(gateway, token).status_code == 200
    assert_rejected(gateway, upstream, f"{head}.{payload}.{flipped}")


def test_a_token_without_the_at_jwt_type_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    for typ in ("JWT", None):
        token = signed_token(gateway, valid_claims(gateway), {"typ": typ})
        assert_rejected(gateway, upstream, token)


def test_a_token_with_an_unknown_kid_is_rejected(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    token = signed_token(gateway, valid_claims(gateway), {"kid": "not-a-key-of-ours"})
    assert_rejected(gateway, upstream, token)


@pytest.mark.parametrize("missing", ["sub", "jti", "client_id", "exp", "iat"])
def test_a_token_missing_a_required_claim_is_rejected(
    gateway: ServingGateway, upstream: Upstream, missing: str
) -> None:
    claims = valid_claims(gateway)
    del claims[missing]
    assert_rejected(gateway, upstream, signed_token(gateway, claims))


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30.", "é"])
def test_garbage_bearer_values_are_rejected(
    gateway: ServingGateway, upstream: Upstream, garbage: str
) -> None:
    with gateway.client() as client:
        response = client.get("/orders", headers={"authorization": f"Bearer {garbage}".encode()})
    assert response.status_code == 401
    assert upstream.count == 0


def test_a_token_of_a_consumer_removed_from_the_config_stops_working(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    claims = valid_claims(gateway, sub="acme/departed", client_id="departed-app")
    assert_rejected(gateway, upstream, signed_token(gateway, claims))


def test_a_valid_token_signed_by_the_server_key_is_accepted(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    # The forging helper itself is sound: with valid claims the token passes.
    response = call(gateway, signed_token(gateway, valid_claims(gateway)))
    assert response.status_code == 200
    assert issuer_of(gateway).startswith("http://127.0.0.1:")


def test_rsa_key_of_the_wrong_server_with_rs256_is_rejected(
    start: StartGateway, upstream: Upstream
) -> None:
    gateway = start(algorithm="RS256")
    signing = gateway.oauth.keyring.signing
    assert signing is not None
    attacker = rsa_key()
    forged = jwt.encode(
        valid_claims(gateway),
        attacker.private,
        algorithm="RS256",
        headers={"typ": "at+jwt", "kid": signing.kid},
    )
    assert_rejected(gateway, upstream, forged)
