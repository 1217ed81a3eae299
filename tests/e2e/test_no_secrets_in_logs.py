"""No secret a client sends ever reaches Portico's log, at the most verbose level.

One ``portico --log-level debug serve`` process with the access log on takes an API key, an OAuth
client secret and the access token it buys, an external identity provider's JWT, an HMAC-signed
request, credentials in query strings, every one of them also wrong, and a request to a target
that refuses connections (the failure log path). Then the whole log is searched for each secret.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from tests.identity.helpers import ServeProcess
from tests.support.oauth import BILLING_SECRET, JWKSServer, KeyPair, rsa_key
from tests.support.signing import Signer
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key

IDP_ISSUER = "https://idp.portico.test"
IDP_AUDIENCE = "api://orders"


class Secrets:
    """Every secret the run uses, to be searched for in the log afterwards."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def add(self, name: str, value: str) -> str:
        assert len(value) >= 16, f"{name} is too short to be searched for meaningfully"
        self.values[name] = value
        return value


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture
def idp_key() -> KeyPair:
    return rsa_key("idp-1")


@pytest.fixture
def jwks_server(idp_key: KeyPair) -> Iterator[JWKSServer]:
    server = JWKSServer(idp_key)
    yield server
    server.close()


def idp_token(key: KeyPair) -> str:
    now = int(time.time())
    claims = {
        "iss": IDP_ISSUER,
        "aud": IDP_AUDIENCE,
        "sub": "partner-co/app",
        "exp": now + 300,
        "iat": now,
        "scope": "orders:read",
    }
    return jwt.encode(claims, key.private, algorithm=key.algorithm, headers={"kid": key.kid})


def signature_value(request: httpx.Request) -> str:
    """The base64 signature of a ``Signature: sig1=:...:`` field."""
    return request.headers["signature"].split(":")[1]


def test_no_secret_used_or_refused_appears_in_a_debug_log(
    tmp_path: Path, upstream: Upstream, jwks_server: JWKSServer, idp_key: KeyPair
) -> None:
    found = Secrets()
    key = generate_key()
    signer = Signer.generate("hmac-sha256")
    found.add("the API key", key.key)
    found.add("the API key's secret part", key.key.split("_", 2)[2])
    found.add("the client secret", BILLING_SECRET)
    found.add("the HMAC signing secret", signer.entry["secret"])
    methods = ["api_key", "oauth", "jwt:idp", "signature"]
    config: dict[str, Any] = {
        "gateway": {"access_log": True},
        "database": {"url": f"sqlite:///{tmp_path / 'portico.db'}"},
        "services": {
            "orders": {"targets": [upstream.url], "retries": 0},
            "down": {"targets": [refused_url()], "retries": 0, "circuit_breaker": None},
        },
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders"},
                "service": "orders",
                "policies": [{"type": "auth", "methods": methods}],
            },
            {"name": "down", "match": {"path": "/down"}, "service": "down"},
        ],
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": key.id, "sha256": key.sha256}],
                        "oauth": {"client_id": "billing-app", "client_secret": BILLING_SECRET},
                        "signature_keys": [signer.entry],
                    }
                }
            }
        },
        "identity": {
            "oauth": {"issuer": "https://auth.portico.test"},
            "providers": {
                "idp": {
                    "issuer": IDP_ISSUER,
                    "jwks_uri": jwks_server.url,
                    "audiences": [IDP_AUDIENCE],
                    "algorithms": ["RS256"],
                }
            },
        },
    }
    process = ServeProcess(tmp_path / "serve", config)
    try:
        with process.client() as http:
            # API keys: right, in the query string too, and wrong in two ways.
            assert http.get("/orders", headers={"x-api-key": key.key}).status_code == 200
            in_query = http.get("/orders", params={"api_key": key.key})
            assert in_query.status_code == 401  # a key is read from its header only
            wrong_secret = found.add("a wrong API key", f"pk_{key.id}_{secrets.token_urlsafe(32)}")
            unknown = found.add("an unknown API key", generate_key().key)
            for bad in (wrong_secret, unknown):
                assert http.get("/orders", headers={"x-api-key": bad}).status_code == 401

            # OAuth client credentials: a token bought with the secret, and refused attempts.
            issued = http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=("billing-app", BILLING_SECRET),
            )
            assert issued.status_code == 200, issued.text
            token = found.add("the access token", issued.json()["access_token"])
            wrong_client_secret = found.add("a wrong client secret", secrets.token_urlsafe(32))
            refused = http.post(
                "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "billing-app",
                    "client_secret": wrong_client_secret,
                },
            )
            assert refused.status_code == 401, refused.text
            bearer = {"authorization": f"Bearer {token}"}
            assert http.get("/orders", headers=bearer).status_code == 200
            assert http.get("/orders", params={"token": token}).status_code == 401
            wrong_token = found.add("a wrong bearer token", secrets.token_urlsafe(40))
            wrong_bearer = {"authorization": f"Bearer {wrong_token}"}
            assert http.get("/orders", headers=wrong_bearer).status_code == 401

            # An external identity provider's JWT, and one signed by a key it never published.
            idp_jwt = found.add("the IdP's JWT", idp_token(idp_key))
            assert http.get(
                "/orders", headers={"authorization": f"Bearer {idp_jwt}"}
            ).status_code == (200)
            forged = found.add("a forged JWT", idp_token(rsa_key("idp-1")))
            assert http.get(
                "/orders", headers={"authorization": f"Bearer {forged}"}
            ).status_code == (401)

            # A signed request, its replay, and a signature over something else.
            signed = signer.sign(http.build_request("GET", "/orders"))
            found.add("a signature", signature_value(signed))
            assert http.send(signed).status_code == 200
            assert http.send(signed).status_code == 401  # the nonce was used
            tampered = signer.sign(http.build_request("GET", "/orders"))
            found.add("a refused signature", signature_value(tampered))
            tampered.headers["signature-input"] = tampered.headers["signature-input"].replace(
                '"@path"', '"@method"', 1
            )
            assert http.send(tampered).status_code == 401

            # Secrets in a query string and in headers, on a request the upstream fails (502).
            query_secret = found.add("a secret in a query string", secrets.token_urlsafe(24))
            down = http.get(
                "/down",
                params={"api_key": query_secret, "token": query_secret},
                headers={"authorization": f"Bearer {wrong_token}", "x-api-key": wrong_secret},
            )
            assert down.status_code == 502
    finally:
        process.stop()

    # Read after the process ended, so the log is complete (stop() closed the file).
    log = process.output_path.read_text(encoding="utf-8", errors="replace")
    # The run logged what it is meant to: at debug level, with the access log on, and the 502.
    assert "GET /orders" in log and "/down" in log, log[-2000:]
    assert "credentials refused" in log, "the debug lines of refused credentials are missing"
    assert "answered 502" in log and "connection refused" in log
    leaked = [name for name, value in found.values.items() if value in log]
    assert not leaked, f"secrets in the log: {leaked}"
