"""Who may introspect (RFC 7662 §2.1, §4) and revoke (RFC 7009 §2.1) which tokens: a client its
own, a client with ``introspect_any`` every one, and nobody learns of another client's token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.oauth import (
    BILLING_SECRET,
    REPORTS_SECRET,
    KeyPair,
    ServingGateway,
    free_port,
    issuer_of,
    oauth_config,
    serving_gateway,
    token_for,
)
from tests.support.upstreams import Upstream

BILLING = ("billing-app", BILLING_SECRET)
REPORTS = ("reports-app", REPORTS_SECRET)


@pytest.fixture
def trusted(tmp_path: Path, upstream: Upstream, warehouse_key: KeyPair) -> Iterator[ServingGateway]:
    """A gateway where ``reports-app`` (another tenant's client) has ``introspect_any: true``."""
    config = oauth_config(free_port(), upstream, warehouse_key)
    config["tenants"]["globex"]["consumers"]["reports"]["oauth"]["introspect_any"] = True
    with serving_gateway(tmp_path, config) as gateway:
        yield gateway


def introspect(gateway: ServingGateway, token: str, auth: tuple[str, str]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/oauth2/introspect", data={"token": token}, auth=auth)


def revoke(gateway: ServingGateway, token: str, auth: tuple[str, str]) -> httpx.Response:
    with gateway.client() as client:
        return client.post("/oauth2/revoke", data={"token": token}, auth=auth)


def call(gateway: ServingGateway, token: str) -> int:
    with gateway.client() as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code


def test_a_client_introspects_its_own_token(gateway: ServingGateway) -> None:
    token = token_for(gateway, *BILLING, scope="orders:read")
    response = introspect(gateway, token, BILLING)
    assert response.status_code == 200
    body = response.json()
    assert body["active"] is True
    assert body["client_id"] == "billing-app"
    assert body["sub"] == "acme/billing"
    assert body["tenant"] == "acme"
    assert body["scope"] == "orders:read"
    assert body["iss"] == issuer_of(gateway)


def test_another_client_token_is_only_inactive(gateway: ServingGateway) -> None:
    token = token_for(gateway, *BILLING)
    theirs = introspect(gateway, token, REPORTS)
    unknown = introspect(gateway, "not-a-token", REPORTS)
    assert theirs.status_code == 200
    assert theirs.json() == {"active": False}
    # Nothing tells a foreign token from an unknown one: same status, headers and bytes.
    assert theirs.content == unknown.content
    assert theirs.headers.get("cache-control") == unknown.headers.get("cache-control")
    assert theirs.headers.get("content-type") == unknown.headers.get("content-type")
    # The token is still fine for its owner and on routes.
    assert introspect(gateway, token, BILLING).json()["active"] is True
    assert call(gateway, token) == 200


def test_a_client_with_introspect_any_sees_every_token(trusted: ServingGateway) -> None:
    token = token_for(trusted, *BILLING, scope="orders:read")
    body = introspect(trusted, token, REPORTS).json()
    assert body["active"] is True
    assert body["client_id"] == "billing-app"
    assert body["sub"] == "acme/billing"
    assert body["scope"] == "orders:read"
    # The setting is the client's own: billing still sees only its tokens.
    reports_token = token_for(trusted, *REPORTS)
    assert introspect(trusted, reports_token, BILLING).json() == {"active": False}


def test_introspect_any_does_not_let_a_client_revoke_another_client_token(
    trusted: ServingGateway,
) -> None:
    token = token_for(trusted, *BILLING)
    response = revoke(trusted, token, REPORTS)
    assert response.status_code == 200
    assert call(trusted, token) == 200
    assert introspect(trusted, token, REPORTS).json()["active"] is True


def test_revoking_another_client_token_leaves_it_working(gateway: ServingGateway) -> None:
    token = token_for(gateway, *BILLING)
    response = revoke(gateway, token, REPORTS)
    assert response.status_code == 200
    assert response.json() == {}
    assert call(gateway, token) == 200
    assert introspect(gateway, token, BILLING).json()["active"] is True
    # Its owner can still revoke it.
    assert revoke(gateway, token, BILLING).status_code == 200
    assert call(gateway, token) == 401
    assert introspect(gateway, token, BILLING).json() == {"active": False}
