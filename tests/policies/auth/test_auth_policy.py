"""The ``auth`` policy, through a real gateway and a real upstream over sockets: what it answers
without credentials, with credentials refused, for another tenant, a refused address or a missing
scope; the identity it hands upstream; and the errors ``portico check`` reports in its settings.

API keys declared in the config are the credentials here; each method's own behaviour is tested
in tests/identity (``test_api_key_method.py`` for the ``api_key`` method).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import RunningGateway, check_problem, route, running_gateway
from tests.support.upstreams import Upstream, echoed_header, echoed_headers

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.identity.apikeys import NewApiKey, generate_key
from portico.identity.authn import METHODS

KEYS: dict[str, NewApiKey] = {
    name: generate_key() for name in ("billing", "support", "shop", "office")
}
PROBLEMS = "https://portico.dev/problems/"


def key_entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"id": KEYS[name].id, "sha256": KEYS[name].sha256, **extra}


def auth(methods: list[str] | None = None, **settings: Any) -> list[dict[str, Any]]:
    return [{"type": "auth", "methods": methods or ["api_key"], **settings}]


def gateway_config(upstream: Upstream) -> dict[str, Any]:
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {"scopes": ["orders:read"], "api_keys": [key_entry("billing")]},
                    "support": {
                        "scopes": ["orders:read", "orders:refund"],
                        "api_keys": [key_entry("support")],
                    },
                    "office": {
                        "scopes": ["orders:read"],
                        "ip_rules": {"allow": ["10.0.0.0/8"]},
                        "api_keys": [key_entry("office")],
                    },
                }
            },
            "globex": {
                "consumers": {
                    "shop": {
                        "scopes": ["orders:read", "orders:admin"],
                        "api_keys": [key_entry("shop")],
                    }
                }
            },
        },
        "routes": [
            route("orders", "/orders", policies=auth(scopes={"all_of": ["orders:read"]})),
            route(
                "refunds",
                "/refunds",
                policies=auth(scopes={"all_of": ["orders:read", "orders:refund"]}),
            ),
            route(
                "admin", "/admin", policies=auth(scopes={"any_of": ["orders:admin", "orders:root"]})
            ),
            route("acme-only", "/acme", policies=auth(tenants=["acme"])),
            route("multi", "/multi", policies=auth(["api_key", "signature"])),
            route("public", "/public"),
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway"), gateway_config(upstream)) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def with_key(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name].key}


def test_a_valid_key_reaches_the_upstream_with_the_identity_headers(http: httpx.Client) -> None:
    response = http.get("/orders", headers=with_key("billing"))

    assert echoed_header(response, "x-portico-consumer") == ["acme/billing"]
    assert echoed_header(response, "x-portico-tenant") == ["acme"]
    assert echoed_header(response, "x-portico-scopes") == ["orders:read"]
    assert echoed_header(response, "x-portico-auth-method") == ["api_key"]


def test_no_credentials_get_401_with_the_challenge_of_every_accepted_method(
    http: httpx.Client,
) -> None:
    response = http.get("/multi")

    problem = check_problem(response, 401, PROBLEMS + "unauthorized")
    assert response.headers.get_list("www-authenticate") == [
        'ApiKey realm="portico"',
        'Signature realm="portico"',
    ]
    assert problem["title"] == "Authentication required"
    assert problem["detail"] == "This route needs credentials."


def test_invalid_credentials_get_the_challenge_of_the_method_that_refused_them(
    http: httpx.Client,
) -> None:
    response = http.get("/multi", headers={"X-API-Key": KEYS["billing"].key + "x"})

    problem = check_problem(response, 401, PROBLEMS + "invalid-credentials")
    assert problem["title"] == "The credentials are not valid"
    assert response.headers.get_list("www-authenticate") == [
        'ApiKey realm="portico", error="invalid_key"'
    ]


def test_a_missing_scope_gets_403_insufficient_scope_with_a_bearer_challenge(
    http: httpx.Client,
) -> None:
    denied = http.get("/refunds", headers=with_key("billing"))
    allowed = http.get("/refunds", headers=with_key("support"))

    check_problem(denied, 403, PROBLEMS + "insufficient-scope")
    assert denied.headers["www-authenticate"] == (
        'Bearer realm="portico", error="insufficient_scope", scope="orders:read orders:refund"'
    )
    assert echoed_header(allowed, "x-portico-consumer") == ["acme/support"]


def test_any_of_needs_only_one_of_the_scopes(http: httpx.Client) -> None:
    denied = http.get("/admin", headers=with_key("billing"))
    allowed = http.get("/admin", headers=with_key("shop"))

    check_problem(denied, 403, PROBLEMS + "insufficient-scope")
    assert 'scope="orders:admin orders:root"' in denied.headers["www-authenticate"]
    assert echoed_header(allowed, "x-portico-scopes") == ["orders:admin orders:read"]


def test_a_consumer_of_another_tenant_never_reaches_a_tenant_route(http: httpx.Client) -> None:
    plain = http.get("/acme", headers=with_key("shop"))
    spoofed = http.get(
        "/acme",
        headers={
            **with_key("shop"),
            "X-Portico-Tenant": "acme",
            "X-Portico-Consumer": "acme/billing",
        },
    )
    own_tenant = http.get("/acme", headers=with_key("billing"))

    check_problem(plain, 403, PROBLEMS + "forbidden")
    check_problem(spoofed, 403, PROBLEMS + "forbidden")
    assert echoed_header(own_tenant, "x-portico-tenant") == ["acme"]


def test_identity_headers_sent_by_the_client_are_replaced(http: httpx.Client) -> None:
    response = http.get(
        "/orders",
        headers={
            **with_key("billing"),
            "X-Portico-Consumer": "globex/shop",
            "X-Portico-Tenant": "globex",
            "X-Portico-Scopes": "orders:admin",
            "X-Portico-Auth-Method": "mtls",
        },
    )

    assert echoed_header(response, "x-portico-consumer") == ["acme/billing"]
    assert echoed_header(response, "x-portico-tenant") == ["acme"]
    assert echoed_header(response, "x-portico-scopes") == ["orders:read"]
    assert echoed_header(response, "x-portico-auth-method") == ["api_key"]


def test_identity_headers_are_stripped_on_routes_without_auth(http: httpx.Client) -> None:
    response = http.get("/public", headers={"X-Portico-Consumer": "acme/billing"})

    assert [k for k, _ in echoed_headers(response) if k.startswith("x-portico-")] == []


def test_the_consumer_ip_rules_use_the_real_client_address(http: httpx.Client) -> None:
    direct = http.get("/orders", headers=with_key("office"))
    spoofed = http.get("/orders", headers={**with_key("office"), "X-Forwarded-For": "10.1.2.3"})

    check_problem(direct, 403, PROBLEMS + "ip-forbidden")
    check_problem(spoofed, 403, PROBLEMS + "ip-forbidden")


@pytest.fixture
def carrier_pigeon() -> Iterator[None]:
    """A method the catalogue names whose module is not installed (as an optional method whose
    dependency is missing)."""
    METHODS.declare("carrier_pigeon", "portico.identity.carrier_pigeon:METHOD")
    yield
    METHODS.remove("carrier_pigeon")


@pytest.mark.usefixtures("carrier_pigeon")
def test_a_method_that_is_not_installed_is_a_config_error() -> None:
    text = """
services: {main: {targets: ["http://127.0.0.1:9"]}}
routes:
  - name: r
    match: {path: /r}
    service: main
    policies:
      - type: auth
        methods: [api_key, carrier_pigeon, telepathy]
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")

    message = str(caught.value)
    assert (
        "portico.yaml:9:28: routes[0].policies[0].methods[1]: authentication method "
        "'carrier_pigeon' is not available in this installation" in message
    )
    assert "methods[2]: unknown authentication method 'telepathy'" in message


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"methods": []}, "methods: tuple should have at least 1 item"),
        ({"methods": ["api_key", "api_key"]}, "a method is listed twice"),
        ({"methods": ["jwt"]}, "jwt needs the identity provider's name"),
        ({"methods": ["api_key"], "api_key": {"hedaer": "X"}}, "api_key.hedaer: Extra inputs"),
        ({"methods": ["api_key"], "oauth": {}}, "'oauth' is neither a setting of auth"),
        (
            {"methods": ["api_key"], "scopes": {"one_of": ["a"]}},
            "scopes.one_of: unknown key 'one_of'",
        ),
    ],
)
def test_invalid_auth_settings_are_reported_by_check(
    settings: dict[str, Any], expected: str, tmp_path: Path
) -> None:
    policy = json.dumps({"type": "auth", **settings})
    text = f"""
services: {{main: {{targets: ["http://127.0.0.1:9"]}}}}
routes:
  - name: r
    match: {{path: /r}}
    service: main
    policies: [{policy}]
"""
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "portico.yaml")

    assert expected in str(caught.value)
