"""Signing-key rotation: a new key signs, the old one verifies its tokens until they expire."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from typing import Any

import jwt
from tests.support.gateway import ROOT, wait_for
from tests.support.oauth import BILLING_SECRET, ServingGateway, token_for

from portico.config.model import OAuthServer
from portico.identity.oauth.repository import SigningKeys
from portico.identity.oauth.state import retired_key_lifetime
from portico.identity.oauth.tokens import DEFAULT_LEEWAY
from portico.store.database import Database

PORTICO = ROOT / ".venv" / "bin" / "portico"


def call(gateway: ServingGateway, token: str) -> int:
    with gateway.client() as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"}).status_code


def published_kids(gateway: ServingGateway) -> set[str]:
    with gateway.client() as client:
        return {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]}


def signing_kid(gateway: ServingGateway) -> str:
    key = gateway.oauth.keyring.signing
    assert key is not None
    return key.kid


def settings_of(gateway: ServingGateway) -> OAuthServer:
    settings = gateway.gateway.runtime.config.identity.oauth
    assert settings is not None
    return settings


def test_rotate_key_command_switches_signing_and_keeps_old_tokens_valid(
    gateway: ServingGateway,
) -> None:
    old_kid = signing_kid(gateway)
    old_token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert call(gateway, old_token) == 200

    result = subprocess.run(
        [str(PORTICO), "oauth", "rotate-key", "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"retired key {old_kid}" in result.stdout

    new_kid = wait_for(
        lambda: signing_kid(gateway) != old_kid and signing_kid(gateway),
        timeout=5,
        what="the gateway to sign with the new key",
    )
    new_token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert jwt.get_unverified_header(old_token)["kid"] == old_kid
    assert call(gateway, new_token) == 200
    assert call(gateway, old_token) == 200
    assert published_kids(gateway) == {old_kid, new_kid}
    # PyJWKClient finds either key in the JWKS.
    jwks = jwt.PyJWKClient(f"{gateway.url}/.well-known/jwks.json")
    for token in (old_token, new_token):
        assert jwks.get_signing_key_from_jwt(token).key_id in {old_kid, new_kid}


def test_the_old_key_is_published_until_every_token_it_signed_has_expired(
    gateway: ServingGateway,
) -> None:
    settings = settings_of(gateway)
    with Database(gateway.database_url) as database:
        rotation = SigningKeys(database, gateway.secrets).rotate(
            "EdDSA", retired_key_lifetime(settings)
        )
    assert rotation is not None
    (retired,) = rotation.retired
    assert retired.retired_at is not None and retired.expires_at is not None
    # The last token the old key could sign is issued now and lives token_ttl (+ leeway).
    assert retired.expires_at - retired.retired_at > timedelta(
        seconds=settings.token_ttl + DEFAULT_LEEWAY
    )


def test_a_retired_key_drops_out_when_its_publication_ends(gateway: ServingGateway) -> None:
    old_kid = signing_kid(gateway)
    old_token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert call(gateway, old_token) == 200  # verified and cached
    with Database(gateway.database_url) as database:
        # A short publication stands in for "the last token it signed has expired".
        SigningKeys(database, gateway.secrets).rotate("EdDSA", timedelta(seconds=2))

    wait_for(lambda: signing_kid(gateway) != old_kid, timeout=5, what="the new signing key")
    assert old_kid in published_kids(gateway)
    wait_for(
        lambda: old_kid not in published_kids(gateway), timeout=10, what="the old key to drop out"
    )
    # Its tokens, cached or not, are no longer accepted.
    assert call(gateway, old_token) == 401
    assert call(gateway, token_for(gateway, "billing-app", BILLING_SECRET)) == 200


def test_a_restart_keeps_the_existing_signing_key(gateway: ServingGateway) -> None:
    kid = signing_kid(gateway)
    assert gateway.oauth.ensure_signing_key(settings_of(gateway)) is None
    with Database(gateway.database_url) as database:
        assert [key.kid for key in SigningKeys(database, gateway.secrets).published()] == [kid]


def test_changing_the_signing_algorithm_rotates_to_a_key_of_that_algorithm(
    gateway: ServingGateway,
) -> None:
    old_kid = signing_kid(gateway)
    old_token = token_for(gateway, "billing-app", BILLING_SECRET)
    rs256: Any = settings_of(gateway).model_copy(update={"signing_algorithm": "RS256"})

    rotation = gateway.call(lambda: gateway.oauth.ensure_signing_key(rs256))

    assert rotation is not None and rotation.created.algorithm == "RS256"
    new_token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert jwt.get_unverified_header(new_token)["alg"] == "RS256"
    assert published_kids(gateway) == {old_kid, rotation.created.kid}
    assert call(gateway, old_token) == 200
    assert call(gateway, new_token) == 200


def test_rotating_with_drop_old_keys_stops_old_tokens_at_once(gateway: ServingGateway) -> None:
    old_kid = signing_kid(gateway)
    old_token = token_for(gateway, "billing-app", BILLING_SECRET)
    assert call(gateway, old_token) == 200  # verified and cached

    result = subprocess.run(
        [str(PORTICO), "oauth", "rotate-key", "--drop-old-keys", "-c", str(gateway.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"dropped key {old_kid}" in result.stdout
    wait_for(lambda: call(gateway, old_token) == 401, timeout=5, what="the old token refused")
    assert old_kid not in published_kids(gateway)
    assert call(gateway, token_for(gateway, "billing-app", BILLING_SECRET)) == 200
