"""External identity providers (``jwt:<provider>``): JWTs verified with the issuer's JWKS.

The identity provider here is a real local HTTP server publishing a JWK Set; it counts requests,
so the tests can tell how often Portico asked for the keys.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from tests.support.gateway import wait_for, write_config
from tests.support.oauth import (
    BILLING_SECRET,
    JWKSServer,
    KeyPair,
    ServingGateway,
    ec_key,
    ed25519_key,
    free_port,
    hs256_token,
    rsa_key,
    serving_gateway,
    token_for,
    unsigned_token,
)
from tests.support.upstreams import Upstream

from portico.assembly import load_config
from portico.config.errors import ConfigError

ISSUER = "https://idp.example.test/realms/partners"
AUDIENCE = "orders-api"
INVALID_TOKEN = 'Bearer realm="portico", error="invalid_token"'
Start = Callable[..., ServingGateway]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture(scope="module")
def idp_key() -> KeyPair:
    return rsa_key("idp-2024")


@pytest.fixture
def idp(idp_key: KeyPair) -> Iterator[JWKSServer]:
    server = JWKSServer(idp_key)
    yield server
    server.close()


@pytest.fixture
def start(tmp_path: Path, upstream: Upstream, idp: JWKSServer) -> Iterator[Start]:
    """A gateway trusting ``idp``; keyword arguments change the provider's settings."""
    with contextlib.ExitStack() as stack:
        count = 0

        def start(**provider: Any) -> ServingGateway:
            nonlocal count
            count += 1
            directory = tmp_path / f"gateway-{count}"
            directory.mkdir()
            port = free_port()
            settings = {
                "issuer": ISSUER,
                "jwks_uri": idp.url,
                "audiences": [AUDIENCE, "other-api"],
                "claims": {"consumer": "azp", "tenant": "org.id", "scopes": "scp"},
                "jwks_min_refresh_interval": "60s",
                **provider,
            }

            def route(name: str, path: str, methods: list[str]) -> dict[str, Any]:
                return {
                    "name": name,
                    "match": {"path": path},
                    "service": "backend",
                    "policies": [{"type": "auth", "methods": methods, "scopes": ["orders:read"]}],
                }

            config = {
                "gateway": {"listen": f"127.0.0.1:{port}"},
                "services": {"backend": {"targets": [upstream.url], "retries": 0}},
                "routes": [
                    route("orders", "/orders", ["jwt:idp"]),
                    route("either", "/either", ["oauth", "jwt:idp"]),
                ],
                "tenants": {
                    "acme": {
                        "consumers": {
                            "billing": {
                                "scopes": ["orders:read"],
                                "oauth": {
                                    "client_id": "billing-app",
                                    "client_secret": BILLING_SECRET,
                                },
                            }
                        }
                    }
                },
                "identity": {
                    "oauth": {"issuer": f"http://127.0.0.1:{port}"},
                    "providers": {"idp": settings},
                },
            }
            return stack.enter_context(serving_gateway(directory, config))

        yield start


def idp_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "service-account-7",
        "azp": "partner-portal",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "org": {"id": "partner-co"},
        "scp": ["orders:read", "profile"],
        "jti": secrets.token_hex(8),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def idp_token(key: KeyPair, claims: dict[str, Any] | None = None, **headers: Any) -> str:
    return jwt.encode(
        claims or idp_claims(),
        key.private,
        algorithm=headers.pop("alg", key.algorithm),
        headers={"kid": key.kid, **headers},
    )


def call(gateway: ServingGateway, token: str, path: str = "/orders") -> httpx.Response:
    with gateway.client() as client:
        return client.get(path, headers={"authorization": f"Bearer {token}"})


def assert_rejected(gateway: ServingGateway, upstream: Upstream, token: str) -> None:
    before = upstream.count
    response = call(gateway, token)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert upstream.count == before


def test_an_idp_token_is_accepted_and_its_claims_mapped(
    start: Start, idp: JWKSServer, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    response = call(gateway, idp_token(idp_key))
    assert response.status_code == 200, response.text
    headers = {k.lower(): v for k, v in upstream.received[-1].headers}
    assert headers["x-portico-consumer"] == "partner-portal"
    assert headers["x-portico-tenant"] == "partner-co"
    assert set(headers["x-portico-scopes"].split()) == {"orders:read", "profile"}
    assert headers["x-portico-auth-method"] == "jwt:idp"


def test_space_separated_scope_claims_are_mapped(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start(claims={"consumer": "sub", "scopes": "scope"})
    token = idp_token(idp_key, idp_claims(scope="orders:read orders:write"))
    assert call(gateway, token).status_code == 200
    headers = {k.lower(): v for k, v in upstream.received[-1].headers}
    assert headers["x-portico-consumer"] == "service-account-7"
    assert set(headers["x-portico-scopes"].split()) == {"orders:read", "orders:write"}


@pytest.mark.parametrize("make_key", [ec_key, ed25519_key], ids=["ES256", "EdDSA"])
def test_ec_and_eddsa_keys_of_the_idp_are_accepted(
    start: Start, idp: JWKSServer, make_key: Callable[[], KeyPair]
) -> None:
    key = make_key()
    idp.publish(key)
    gateway = start()
    assert call(gateway, idp_token(key)).status_code == 200


def test_the_jwks_is_fetched_once_and_verified_tokens_are_cached(
    start: Start, idp: JWKSServer, idp_key: KeyPair
) -> None:
    gateway = start()
    tokens = [idp_token(idp_key) for _ in range(3)]
    statuses = [call(gateway, token).status_code for token in tokens for _ in range(3)]
    assert statuses == [200] * 9
    assert idp.count() == 1


def test_concurrent_first_requests_share_one_jwks_fetch(
    start: Start, idp: JWKSServer, idp_key: KeyPair
) -> None:
    gateway = start()
    tokens = [idp_token(idp_key) for _ in range(20)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda token: call(gateway, token).status_code, tokens))
    assert statuses == [200] * 20
    assert idp.count() == 1


def test_an_unknown_kid_triggers_one_refresh_that_finds_the_new_key(
    start: Start, idp: JWKSServer, idp_key: KeyPair
) -> None:
    gateway = start(jwks_min_refresh_interval="200ms")
    assert call(gateway, idp_token(idp_key)).status_code == 200
    assert idp.count() == 1

    rotated = rsa_key("idp-2025")
    idp.publish(idp_key, rotated)
    token = idp_token(rotated)
    # Until the refresh interval has passed the unknown kid is refused without asking the IdP;
    # then one request refreshes the key set and finds the new key.
    wait_for(lambda: call(gateway, token).status_code == 200, timeout=5, what="the new key")
    assert idp.count() == 2
    assert call(gateway, idp_token(idp_key)).status_code == 200
    assert idp.count() == 2


def test_a_flood_of_unknown_kids_does_not_flood_the_idp(
    start: Start, idp: JWKSServer, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    assert call(gateway, idp_token(idp_key)).status_code == 200
    with gateway.client() as client:
        statuses = {
            client.get(
                "/orders",
                headers={"authorization": f"Bearer {idp_token(idp_key, kid=secrets.token_hex(6))}"},
            ).status_code
            for _ in range(200)
        }
    assert statuses == {401}
    assert idp.count() == 1
    assert upstream.count == 1


def test_an_unreachable_jwks_is_not_hammered(
    start: Start, idp: JWKSServer, idp_key: KeyPair, upstream: Upstream
) -> None:
    idp.status = 503
    gateway = start()
    for _ in range(20):
        assert_rejected(gateway, upstream, idp_token(idp_key))
    assert idp.count() == 1


def test_an_expired_key_set_is_fetched_again(
    start: Start, idp: JWKSServer, idp_key: KeyPair
) -> None:
    gateway = start(jwks_cache_ttl="300ms", jwks_min_refresh_interval="100ms")
    assert call(gateway, idp_token(idp_key)).status_code == 200
    wait_for(
        lambda: call(gateway, idp_token(idp_key)).status_code == 200 and idp.count() >= 2,
        timeout=5,
        what="a second JWKS fetch",
    )


def test_a_route_accepting_oauth_and_an_idp_takes_tokens_of_both(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    ours = token_for(gateway, "billing-app", BILLING_SECRET)
    theirs = idp_token(idp_key)
    assert call(gateway, ours, "/either").status_code == 200
    assert call(gateway, theirs, "/either").status_code == 200
    methods = [
        dict((k.lower(), v) for k, v in r.headers)["x-portico-auth-method"]
        for r in upstream.received
    ]
    assert methods == ["oauth", "jwt:idp"]


# -- attacks -------------------------------------------------------------------------------------


def test_alg_none_is_rejected(start: Start, idp_key: KeyPair, upstream: Upstream) -> None:
    gateway = start()
    assert call(gateway, idp_token(idp_key)).status_code == 200  # keys loaded
    token = unsigned_token({"alg": "none", "kid": idp_key.kid}, idp_claims())
    assert_rejected(gateway, upstream, token)


def test_hs256_signed_with_the_idp_rsa_public_key_is_rejected(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    assert call(gateway, idp_token(idp_key)).status_code == 200
    pem = idp_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, idp_key.public_jwk["n"].encode()):
        token = hs256_token({"alg": "HS256", "kid": idp_key.kid}, idp_claims(), secret)
        assert_rejected(gateway, upstream, token)


def test_an_algorithm_outside_the_allowlist_is_rejected(
    start: Start, idp: JWKSServer, upstream: Upstream
) -> None:
    key = ec_key("ec-key")
    idp.publish(key)
    gateway = start(algorithms=["RS256"])
    assert_rejected(gateway, upstream, idp_token(key))


def test_symmetric_algorithms_cannot_be_allowed(tmp_path: Path, idp: JWKSServer) -> None:
    config = {
        "identity": {
            "providers": {
                "idp": {
                    "issuer": ISSUER,
                    "jwks_uri": idp.url,
                    "audiences": [AUDIENCE],
                    "algorithms": ["RS256", "HS256"],
                }
            }
        }
    }
    with pytest.raises(ConfigError, match="HS256"):
        load_config(write_config(tmp_path / "portico.yaml", config))


@pytest.mark.parametrize(
    "changes",
    [
        # Offsets from the moment the test runs (not when pytest collected it: a long suite
        # would otherwise age these tokens into validity).
        {"exp": -120},
        {"nbf": 600},
        {"iat": 600},
        {"aud": "someone-else"},
        {"aud": None},
        {"exp": None},
        {"azp": None},
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "issued-in-the-future",
        "wrong-audience",
        "no-audience",
        "no-expiry",
        "no-consumer-claim",
    ],
)
def test_tokens_with_invalid_claims_are_rejected(
    start: Start, idp_key: KeyPair, upstream: Upstream, changes: dict[str, Any]
) -> None:
    now = int(time.time())
    timed = {
        k: now + v if k in ("exp", "nbf", "iat") and isinstance(v, int) else v
        for k, v in changes.items()
    }
    gateway = start()
    assert_rejected(gateway, upstream, idp_token(idp_key, idp_claims(**timed)))


@pytest.mark.parametrize(
    "changes",
    [
        {"azp": "portal\r\nx-portico-tenant: victim"},
        {"azp": "portal\nx-injected: 1"},
        {"azp": "portail-\u00e9t\u00e9"},
        {"azp": " padded"},
        {"org": {"id": "co\r\nx-injected: 1"}},
        {"scp": ["orders:read", "orders:write\r\nx-injected: 1"]},
        {"scp": ["orders read"]},
    ],
    ids=[
        "crlf-in-consumer",
        "lf-in-consumer",
        "non-ascii-consumer",
        "padded-consumer",
        "crlf-in-tenant",
        "crlf-in-scope",
        "space-in-scope",
    ],
)
def test_claims_that_cannot_go_upstream_as_fields_refuse_the_token(
    start: Start, idp_key: KeyPair, upstream: Upstream, changes: dict[str, Any]
) -> None:
    # The IdP signed them, but its users may shape these values: they must not reach the head.
    gateway = start()
    assert_rejected(gateway, upstream, idp_token(idp_key, idp_claims(**changes)))


def test_clock_skew_is_tolerated(start: Start, idp_key: KeyPair) -> None:
    gateway = start(clock_skew="30s")
    now = int(time.time())
    token = idp_token(idp_key, idp_claims(exp=now - 5, nbf=now + 5))
    assert call(gateway, token).status_code == 200


def test_a_token_of_another_issuer_is_not_accepted(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    response = call(gateway, idp_token(idp_key, idp_claims(iss="https://evil.example")))
    assert response.status_code == 401
    assert upstream.count == 0


def test_a_tampered_payload_or_signature_is_rejected(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    token = idp_token(idp_key)
    head, payload, signature = token.split(".")
    other_payload = idp_token(idp_key, idp_claims(azp="admin-console")).split(".")[1]
    assert_rejected(gateway, upstream, f"{head}.{other_payload}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_rejected(gateway, upstream, f"{head}.{payload}.{flipped}")


def test_a_token_signed_by_an_impostor_with_the_idp_kid_is_rejected(
    start: Start, idp_key: KeyPair, upstream: Upstream
) -> None:
    gateway = start()
    impostor = KeyPair(rsa_key().private, "RS256", idp_key.kid)
    assert_rejected(gateway, upstream, idp_token(impostor))
