"""``portico check`` on the authorization server and identity provider settings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import write_config
from tests.support.oauth import ed25519_key, jwks

from portico.assembly import load_config
from portico.config.errors import ConfigError

BASE: dict[str, Any] = {
    "services": {"orders": {"targets": ["http://127.0.0.1:9"]}},
    "routes": [
        {
            "name": "orders",
            "match": {"path": "/orders"},
            "service": "orders",
            "policies": [{"type": "auth", "methods": ["oauth"]}],
        }
    ],
    "tenants": {
        "acme": {
            "consumers": {
                "billing": {"oauth": {"client_id": "billing-app", "client_secret": "s" * 32}},
                "warehouse": {"oauth": {"client_id": "warehouse-app", "jwks": jwks(ed25519_key())}},
            }
        }
    },
    "identity": {"oauth": {"issuer": "https://auth.example.com"}},
}


def check(tmp_path: Path, edit: Any) -> str:
    config = copy.deepcopy(BASE)
    edit(config)
    with pytest.raises(ConfigError) as raised:
        load_config(write_config(tmp_path / "portico.yaml", config))
    return str(raised.value)


def test_the_base_config_is_valid(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "portico.yaml", BASE))
    assert config.identity.oauth is not None


def test_a_route_accepting_oauth_needs_the_authorization_server(tmp_path: Path) -> None:
    message = check(tmp_path, lambda c: c.pop("identity"))
    assert "routes[0].policies[0].methods[0]" in message
    assert "needs identity.oauth" in message


def test_a_jwt_method_must_name_a_configured_provider(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["routes"][0]["policies"][0]["methods"] = ["jwt:okta"]

    assert "no identity provider 'okta'" in check(tmp_path, edit)


def test_a_client_id_used_twice_is_an_error(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["tenants"]["acme"]["consumers"]["warehouse"]["oauth"]["client_id"] = "billing-app"

    assert "client_id 'billing-app' is already used by acme/billing" in check(tmp_path, edit)


@pytest.mark.parametrize(
    ("oauth", "message"),
    [
        ({"client_id": "x"}, "a client needs a client_secret"),
        (
            {"client_id": "x", "client_secret": "a", "client_secret_sha256": "0" * 64},
            "not both",
        ),
        ({"client_id": "x", "jwks": {"keys": []}}, "no usable public signing key"),
        ({"client_id": "x", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, "no usable"),
        ({"client_id": "x", "jwks_uri": "ftp://keys.example.com/jwks"}, "jwks_uri must be"),
    ],
    ids=["no-credentials", "two-secrets", "empty-jwks", "symmetric-jwk", "bad-jwks-uri"],
)
def test_client_credentials_are_checked(
    tmp_path: Path, oauth: dict[str, Any], message: str
) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["tenants"]["acme"]["consumers"]["billing"]["oauth"] = oauth

    assert message in check(tmp_path, edit)


def test_introspect_any_must_be_a_boolean(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["tenants"]["acme"]["consumers"]["billing"]["oauth"]["introspect_any"] = "maybe"

    message = check(tmp_path, edit)
    assert "portico.yaml:" in message
    assert "tenants.acme.consumers.billing.oauth.introspect_any" in message


def test_introspect_any_is_off_unless_given(tmp_path: Path) -> None:
    config = copy.deepcopy(BASE)
    config["tenants"]["acme"]["consumers"]["warehouse"]["oauth"]["introspect_any"] = True
    loaded = load_config(write_config(tmp_path / "portico.yaml", config))
    consumers = loaded.tenants["acme"].consumers
    assert [(name, c.oauth.introspect_any) for name, c in consumers.items() if c.oauth] == [
        ("billing", False),
        ("warehouse", True),
    ]


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"issuer": "auth.example.com"}, "issuer must be an http"),
        ({"issuer": "https://auth.example.com?x=1"}, "issuer cannot have a query"),
        ({"issuer": "https://a.example", "token_ttl": "0s"}, "at least 1s"),
        ({"issuer": "https://a.example", "path_prefix": "/oauth/{x}"}, "plain path"),
        ({"issuer": "https://a.example", "signing_algorithm": "HS256"}, "signing_algorithm"),
    ],
    ids=["issuer-not-a-url", "issuer-query", "zero-ttl", "templated-prefix", "hmac-signing"],
)
def test_server_settings_are_checked(tmp_path: Path, server: dict[str, Any], message: str) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["identity"]["oauth"] = server

    assert message in check(tmp_path, edit)
