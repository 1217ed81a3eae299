"""A verified key is remembered until the identity directory changes, and never past its expiry."""

from __future__ import annotations

import hmac
import time
from typing import Any

import pytest

from portico.assembly import load_config_text
from portico.gateway.exchange import Exchange, Identity
from portico.gateway.headers import Headers
from portico.identity.apikeys import ApiKeyAuthenticator, NewApiKey, generate_key
from portico.identity.authn import Rejected
from portico.identity.state import Directory, IdentityState, KeyEntry


def config(key: NewApiKey) -> str:
    return f"""
services: {{main: {{targets: ["http://127.0.0.1:9"]}}}}
routes: [{{name: r, match: {{path: /}}, service: main}}]
tenants:
  acme:
    consumers:
      billing:
        scopes: [orders:read]
        api_keys: [{{id: {key.id}, sha256: {key.sha256}}}]
"""


def exchange(key: str) -> Exchange:
    return Exchange(
        method="GET",
        path="/",
        query="",
        headers=Headers([("host", "api.example"), ("x-api-key", key)]),
        http_version="1.1",
        scheme="http",
        host="api.example",
        client_ip="127.0.0.1",
        peer_ip="127.0.0.1",
        request_id="r1",
        route=None,
        path_params={},
        upstream_path="/",
    )


@pytest.fixture
def key() -> NewApiKey:
    return generate_key()


@pytest.fixture
def state(key: NewApiKey) -> IdentityState:
    return IdentityState.for_config(load_config_text(config(key), "portico.yaml"))


@pytest.fixture
def compares(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    original = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append(b)
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def with_key_entry(directory: Directory, entry: KeyEntry) -> Directory:
    keys = {**directory.api_keys, entry.id: entry}
    return Directory(directory.consumers, keys, directory.version + 1, directory.ip_rules)


def test_a_key_is_hashed_once_then_remembered(
    key: NewApiKey, state: IdentityState, compares: list[Any]
) -> None:
    authenticator = ApiKeyAuthenticator(state)

    results = [authenticator.identify(exchange(key.key)) for _ in range(3)]

    assert all(isinstance(r, Identity) and r.consumer == "acme/billing" for r in results)
    assert compares == [key.sha256]


def test_a_remembered_key_is_refused_once_revoked(
    key: NewApiKey, state: IdentityState, compares: list[Any]
) -> None:
    authenticator = ApiKeyAuthenticator(state)
    assert isinstance(authenticator.identify(exchange(key.key)), Identity)

    entry = state.directory.api_keys[key.id]
    revoked = KeyEntry(entry.id, entry.consumer, entry.sha256, time.time() - 1, "database")
    state._replace(with_key_entry(state.directory, revoked))
    result = authenticator.identify(exchange(key.key))

    assert isinstance(result, Rejected)
    assert len(compares) == 2  # the new directory made it check the key again


def test_a_remembered_key_is_refused_once_its_secret_changed(
    key: NewApiKey, state: IdentityState
) -> None:
    authenticator = ApiKeyAuthenticator(state)
    assert isinstance(authenticator.identify(exchange(key.key)), Identity)

    entry = state.directory.api_keys[key.id]
    replaced = KeyEntry(entry.id, entry.consumer, generate_key().sha256, None, "database")
    state._replace(with_key_entry(state.directory, replaced))

    assert isinstance(authenticator.identify(exchange(key.key)), Rejected)


def test_expiry_is_checked_on_every_request(
    key: NewApiKey, state: IdentityState, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = state.directory.api_keys[key.id]
    expiring = KeyEntry(entry.id, entry.consumer, entry.sha256, time.time() + 60, "config")
    state._replace(with_key_entry(state.directory, expiring))
    authenticator = ApiKeyAuthenticator(state)
    assert isinstance(authenticator.identify(exchange(key.key)), Identity)

    later = time.time() + 120
    monkeypatch.setattr(time, "time", lambda: later)

    assert isinstance(authenticator.identify(exchange(key.key)), Rejected)


def test_wrong_keys_are_never_remembered(
    key: NewApiKey, state: IdentityState, compares: list[Any]
) -> None:
    authenticator = ApiKeyAuthenticator(state)
    wrong = key.key[:-4] + ("AAAA" if not key.key.endswith("AAAA") else "BBBB")

    results = [authenticator.identify(exchange(wrong)) for _ in range(3)]

    assert all(isinstance(r, Rejected) for r in results)
    assert compares == [key.sha256] * 3
