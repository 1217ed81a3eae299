"""The token endpoint: client credentials grant, client authentication, scopes, RFC 6749 errors."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from tests.support.oauth import (
    BILLING_SECRET,
    REPORTS_SECRET,
    JWKSServer,
    KeyPair,
    ServingGateway,
    StartGateway,
    ed25519_key,
    hs256_token,
    issuer_of,
    token_for,
)
from tests.support.upstreams import Upstream

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def identity_headers(upstream: Upstream) -> dict[str, str]:
    last = upstream.received[-1]
    return {k.lower(): v for k, v in last.headers if k.lower().startswith("x-portico-")}


def test_authlib_client_gets_a_token_and_calls_a_protected_route(
    gateway: ServingGateway, upstream: Upstream
) -> None:
    with OAuth2Client(
        "billing-app", BILLING_SECRET, scope="orders:read", trust_env=False, base_url=gateway.url
    ) as client:
        token = client.fetch_token(f"{gateway.url}/oauth2/token", grant_type="client_credentials")
        response = client.get("/orders")

    assert token["token_type"] == "Bearer"
    assert token["scope"] == "orders:read"
    assert 0 < token["expires_in"] <= 3600
    assert response.status_code == 200
    headers = identity_headers(upstream)
    assert headers["x-portico-consumer"] == "acme/billing"
    assert headers["x-portico-tenant"] == "acme"
    assert headers["x-portico-auth-method"] == "oauth"


def test_client_secret_post_is_accepted(gateway: ServingGateway) -> None:
    with OAuth2Client(
        "billing-app",
        BILLING_SECRET,
        token_endpoint_auth_method="client_secret_post",
        trust_env=False,
    ) as client:
        token = client.fetch_token(f"{gateway.url}/oauth2/token", grant_type="client_credentials")
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["sub"] == (
        "acme/billing"
    )


def test_client_declared_by_secret_hash_authenticates(gateway: ServingGateway) -> None:
    token = token_for(gateway, "reports-app", REPORTS_SECRET)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["tenant"], claims["client_id"]) == (
        "globex/reports",
        "globex",
        "reports-app",
    )


def test_access_token_is_an_rfc9068_jwt(gateway: ServingGateway) -> None:
    before = int(time.time())
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})

    signing = gateway.oauth.keyring.signing
    assert signing is not None
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": signing.kid}
    issuer = issuer_of(gateway)
    assert claims["iss"] == issuer and claims["aud"] == issuer
    assert claims["sub"] == "acme/billing" and claims["client_id"] == "billing-app"
    assert claims["tenant"] == "acme"
    assert claims["scope"] == "orders:read orders:write"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 3600
    assert len(claims["jti"]) >= 16


def test_token_response_is_not_stored_by_caches(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert response.headers["content-type"] == "application/json"


def test_rs256_server_signs_with_rs256(start: StartGateway) -> None:
    gateway = start(algorithm="RS256")
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    with gateway.client() as client:
        assert (
            client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code == 200
        )


# -- scopes --------------------------------------------------------------------------------------


def test_requested_scopes_are_intersected_with_the_granted_ones(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET, scope="orders:write orders:admin")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "orders:write"


def test_a_token_without_the_route_scope_gets_insufficient_scope(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET, scope="orders:write")
    with gateway.client() as client:
        response = client.get("/orders", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_requesting_only_scopes_not_granted_is_invalid_scope(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "scope": "orders:admin"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert response.headers["cache-control"] == "no-store"


# -- client authentication failures --------------------------------------------------------------


def test_wrong_secret_and_unknown_client_get_the_same_invalid_client_answer(
    gateway: ServingGateway,
) -> None:
    answers = []
    with gateway.client() as client:
        for credentials in [("billing-app", "wrong"), ("nobody", "wrong"), ("warehouse-app", "")]:
            response = client.post(
                "/oauth2/token", data={"grant_type": "client_credentials"}, auth=credentials
            )
            body = response.json()
            assert body.pop("request_id") == response.headers["x-request-id"]
            answers.append((response.status_code, response.headers["www-authenticate"], body))
    assert answers[0] == answers[1] == answers[2]
    status, challenge, body = answers[0]
    assert status == 401
    assert challenge == 'Basic realm="portico"'
    assert body == {"error": "invalid_client", "error_description": "client authentication failed"}


def test_secret_post_with_a_wrong_secret_is_invalid_client(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "billing-app",
                "client_secret": BILLING_SECRET + "x",
            },
        )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_no_client_authentication_is_invalid_client(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post("/oauth2/token", data={"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_two_client_authentication_methods_at_once_are_invalid_request(
    gateway: ServingGateway,
) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "billing-app",
                "client_secret": BILLING_SECRET,
            },
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type"),
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        (
            [("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
            "invalid_request",
        ),
    ],
    ids=["authorization-code", "password", "no-grant-type", "repeated-parameter"],
)
def test_malformed_or_unsupported_requests_get_rfc6749_errors(
    gateway: ServingGateway, form: dict[str, str] | list[tuple[str, str]], error: str
) -> None:
    body = httpx.QueryParams(form).__str__()
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert "error_description" in response.json()


def test_a_json_body_is_invalid_request(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/token",
            json={"grant_type": "client_credentials"},
            auth=("billing-app", BILLING_SECRET),
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# -- private_key_jwt (RFC 7523) ------------------------------------------------------------------


def test_private_key_jwt_assertion_made_by_authlib_is_accepted(
    gateway: ServingGateway, warehouse_key: KeyPair, upstream: Upstream
) -> None:
    token_url = f"{gateway.url}/oauth2/token"
    with OAuth2Client(
        "warehouse-app",
        warehouse_key.private_pem.decode(),
        token_endpoint_auth_method="private_key_jwt",
        trust_env=False,
        base_url=gateway.url,
    ) as client:
        client.register_client_auth_method(PrivateKeyJWT(token_url))
        client.fetch_token(token_url, grant_type="client_credentials")
        response = client.get("/orders")
    assert response.status_code == 200
    assert identity_headers(upstream)["x-portico-consumer"] == "acme/warehouse"


def assertion(
    key: KeyPair, audience: str, *, client_id: str = "warehouse-app", **changes: object
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    claims.update(changes)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None},
        key.private,
        algorithm=key.algorithm,
        headers={"kid": key.kid},
    )


def post_assertion(gateway: ServingGateway, signed: str) -> httpx.Response:
    with gateway.client() as client:
        return client.post(
            "/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": signed,
            },
        )


def test_private_key_jwt_assertion_made_with_pyjwt_for_the_issuer_is_accepted(
    gateway: ServingGateway, warehouse_key: KeyPair
) -> None:
    response = post_assertion(gateway, assertion(warehouse_key, issuer_of(gateway)))
    assert response.status_code == 200, response.text


def test_a_replayed_client_assertion_is_rejected(
    gateway: ServingGateway, warehouse_key: KeyPair
) -> None:
    signed = assertion(warehouse_key, f"{gateway.url}/oauth2/token")
    assert post_assertion(gateway, signed).status_code == 200
    replay = post_assertion(gateway, signed)
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "https://other-server.example/oauth2/token"},
        # Times are offsets from when the test runs, not from when pytest collected it.
        {"exp": -120},
        {"exp": 86400},
        {"jti": None},
        {"sub": "billing-app"},
        {"iat": 3600},
    ],
    ids=[
        "wrong-audience",
        "expired",
        "lives-too-long",
        "no-jti",
        "sub-is-not-the-client",
        "future-iat",
    ],
)
def test_invalid_client_assertions_are_rejected(
    gateway: ServingGateway, warehouse_key: KeyPair, changes: dict[str, object]
) -> None:
    now = int(time.time())
    timed = {
        k: now + v if k in ("exp", "iat") and isinstance(v, int) else v for k, v in changes.items()
    }
    response = post_assertion(gateway, assertion(warehouse_key, issuer_of(gateway), **timed))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_an_assertion_signed_with_another_key_is_rejected(gateway: ServingGateway) -> None:
    impostor = KeyPair(ed25519_key().private, "EdDSA", "warehouse-1")
    response = post_assertion(gateway, assertion(impostor, issuer_of(gateway)))
    assert response.status_code == 401


def test_an_hmac_assertion_made_with_the_client_public_key_is_rejected(
    gateway: ServingGateway, warehouse_key: KeyPair
) -> None:
    now = int(time.time())
    claims = {
        "iss": "warehouse-app",
        "sub": "warehouse-app",
        "aud": issuer_of(gateway),
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    forged = hs256_token(
        {"alg": "HS256", "kid": warehouse_key.kid}, claims, warehouse_key.public_pem
    )
    assert post_assertion(gateway, forged).status_code == 401


def test_client_keys_are_fetched_from_the_client_jwks_uri(
    start: StartGateway, warehouse_key: KeyPair
) -> None:
    client_keys = JWKSServer(warehouse_key)
    try:
        gateway = start(warehouse_jwks_uri=client_keys.url)
        first = post_assertion(gateway, assertion(warehouse_key, issuer_of(gateway)))
        second = post_assertion(gateway, assertion(warehouse_key, issuer_of(gateway)))
    finally:
        client_keys.close()
    assert (first.status_code, second.status_code) == (200, 200)
    assert client_keys.count() == 1
