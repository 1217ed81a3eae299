"""Token introspection (RFC 7662) and revocation (RFC 7009)."""

from __future__ import annotations

import time

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from tests.support.oauth import (
    BILLING_SECRET,
    REPORTS_SECRET,
    ServingGateway,
    issuer_of,
    signed_token,
    token_for,
    valid_claims,
)


def introspect(gateway: ServingGateway, token: str, auth: tuple[str, str]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/oauth2/introspect", data={"token": token}, auth=auth)


def revoke(gateway: ServingGateway, token: str, auth: tuple[str, str]) -> httpx.Response:
    with gateway.client() as client:
        return client.post(
            "/oauth2/revoke", data={"token": token, "token_type_hint": "access_token"}, auth=auth
        )


def call(gateway: ServingGateway, token: str) -> int:
    with gateway.client() as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code


def test_introspection_describes_an_active_token(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET, scope="orders:read")
    response = introspect(gateway, token, ("billing-app", BILLING_SECRET))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["active"] is True
    assert body["client_id"] == "billing-app"
    assert body["sub"] == "acme/billing"
    assert body["tenant"] == "acme"
    assert body["scope"] == "orders:read"
    assert body["iss"] == body["aud"] == issuer_of(gateway)
    assert body["token_type"] == "Bearer"
    assert body["exp"] > time.time()


def test_introspection_through_authlib_client(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    with OAuth2Client("billing-app", BILLING_SECRET, trust_env=False) as client:
        response = client.introspect_token(f"{gateway.url}/oauth2/introspect", token=token)
    assert response.json()["active"] is True


def test_introspection_says_only_inactive_for_any_invalid_token(
    gateway: ServingGateway,
) -> None:
    now = int(time.time())
    expired = signed_token(gateway, valid_claims(gateway, iat=now - 7200, exp=now - 3600))
    wrong_audience = signed_token(gateway, valid_claims(gateway, aud="https://elsewhere.example"))
    for token in ("garbage", expired, wrong_audience):
        response = introspect(gateway, token, ("billing-app", BILLING_SECRET))
        assert response.status_code == 200
        assert response.json() == {"active": False}


def test_introspection_requires_client_authentication(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    with gateway.client() as client:
        anonymous = client.post("/oauth2/introspect", data={"token": token})
    wrong = introspect(gateway, token, ("billing-app", "wrong"))
    assert anonymous.status_code == wrong.status_code == 401
    assert "active" not in anonymous.json()


def test_introspection_without_a_token_is_invalid_request(gateway: ServingGateway) -> None:
    with gateway.client() as client:
        response = client.post(
            "/oauth2/introspect", data={"foo": "bar"}, auth=("billing-app", BILLING_SECRET)
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_a_revoked_token_is_rejected_by_the_gateway_and_inactive(
    gateway: ServingGateway,
) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert call(gateway, token) == 200  # now in the verified-token cache

    response = revoke(gateway, token, ("billing-app", BILLING_SECRET))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert call(gateway, token) == 401
    assert introspect(gateway, token, ("billing-app", BILLING_SECRET)).json() == {"active": False}
    # Other tokens of the same client are not affected.
    assert call(gateway, token_for(gateway, "billing-app", BILLING_SECRET)) == 200


def test_revocation_through_authlib_client(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    with OAuth2Client("billing-app", BILLING_SECRET, trust_env=False) as client:
        response = client.revoke_token(f"{gateway.url}/oauth2/revoke", token=token)
    assert response.status_code == 200
    assert call(gateway, token) == 401


def test_revoking_an_unknown_or_invalid_token_answers_200(gateway: ServingGateway) -> None:
    now = int(time.time())
    expired = signed_token(gateway, valid_claims(gateway, iat=now - 7200, exp=now - 3600))
    for token in ("not-a-token", expired):
        assert revoke(gateway, token, ("billing-app", BILLING_SECRET)).status_code == 200


def test_revoking_twice_answers_200_both_times(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    first = revoke(gateway, token, ("billing-app", BILLING_SECRET))
    second = revoke(gateway, token, ("billing-app", BILLING_SECRET))
    assert (first.status_code, second.status_code) == (200, 200)


def test_a_client_cannot_revoke_another_client_token(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    response = revoke(gateway, token, ("reports-app", REPORTS_SECRET))
    assert response.status_code == 200
    assert call(gateway, token) == 200


def test_revocation_requires_client_authentication(gateway: ServingGateway) -> None:
    token = token_for(gateway, "billing-app", BILLING_SECRET)
    with gateway.client() as client:
        response = client.post("/oauth2/revoke", data={"token": token})
    assert response.status_code == 401
    assert call(gateway, token) == 200
