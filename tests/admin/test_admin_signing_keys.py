"""The OAuth server's signing keys through the admin API, on a store where they are sealed
(docs/secrets.md): listed, rotated, published by the gateway and used for the next token, which
PyJWT verifies with the gateway's JWKS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from tests.admin.conftest import ADMIN, Admin, make_token
from tests.support.gateway import PorticoProcess, route, service
from tests.support.upstreams import Upstream

ISSUER = "https://auth.portico.test"
SECRET = "billing-secret-0123456789"


@pytest.fixture
def oauth_admin(tmp_path: Path, upstream: Upstream) -> Iterator[Admin]:
    config = {
        "admin": ADMIN,
        "services": {"main": service(upstream.url, retries=0)},
        "routes": [route("orders", "/orders", policies=[{"type": "auth", "methods": ["oauth"]}])],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {"oauth": {"client_id": "billing-app", "client_secret": SECRET}}
                }
            }
        },
        "identity": {"oauth": {"issuer": ISSUER, "audience": "https://api.portico.test"}},
    }
    portico = PorticoProcess(tmp_path, config)
    try:
        yield Admin(portico, {"admin": make_token(portico.config_path, "admin")})
    finally:
        portico.stop()


def _token_kid(admin: Admin) -> str:
    with admin.gateway() as gateway:
        answer = gateway.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("billing-app", SECRET),
        )
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        keys = jwt.PyJWKSet.from_dict(gateway.get("/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience="https://api.portico.test")
    return str(kid)


def test_signing_keys_are_listed_rotated_and_used_for_the_next_token(oauth_admin: Admin) -> None:
    first = _token_kid(oauth_admin)
    with oauth_admin.client() as http:
        listed = http.get("/signing-keys")
        assert listed.status_code == 200, listed.text
        assert [(k["kid"], k["state"]) for k in listed.json()["items"]] == [(first, "signing")]

        rotated = http.post("/signing-keys/rotate", json={})
        assert rotated.status_code == 201, rotated.text
        new = rotated.json()["created"]["kid"]
        assert [k["kid"] for k in rotated.json()["retired"]] == [first]

        states = {k["kid"]: k["state"] for k in http.get("/signing-keys").json()["items"]}
    assert states == {new: "signing", first: "retired"}
    assert _token_kid(oauth_admin) == new
