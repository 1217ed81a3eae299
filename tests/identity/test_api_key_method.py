"""The ``api_key`` method, behind a route's ``auth`` policy, through a real gateway and a real
upstream over sockets: where a key is read from, that it never goes upstream, that every invalid
key gets the same answer, and that the secret is compared in constant time.

Keys are declared in the config by hash here; keys in the database (created, rotated, revoked
with ``portico keys``) are exercised with ``portico serve`` processes in tests/e2e. What the
``auth`` policy does with the identity is tested in tests/policies/auth.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from tests.support.gateway import RunningGateway, check_problem, route, running_gateway
from tests.support.upstreams import Upstream, echoed_header, echoed_headers

from portico.identity.apikeys import NewApiKey, generate_key

KEYS: dict[str, NewApiKey] = {
    name: generate_key() for name in ("billing", "support", "shop", "expired", "timing")
}
PROBLEMS = "https://portico.dev/problems/"


def key_entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"id": KEYS[name].id, "sha256": KEYS[name].sha256, **extra}


def auth(**options: Any) -> list[dict[str, Any]]:
    return [{"type": "auth", "methods": ["api_key"], **options}]


def gateway_config(upstream: Upstream) -> dict[str, Any]:
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "tenants": {
            "acme": {
                "consumers": {
                    "billing": {
                        "scopes": ["orders:read"],
                        "api_keys": [key_entry("billing"), key_entry("timing")],
                    },
                    "support": {"scopes": ["orders:read"], "api_keys": [key_entry("support")]},
                    "former": {
                        "scopes": ["orders:read"],
                        "api_keys": [key_entry("expired", expires_at="2020-01-01T00:00:00Z")],
                    },
                }
            },
            "globex": {
                "consumers": {"shop": {"scopes": ["orders:read"], "api_keys": [key_entry("shop")]}}
            },
        },
        "routes": [
            route("orders", "/orders", policies=auth()),
            route(
                "partner",
                "/partner",
                policies=auth(api_key={"header": "X-Partner-Key", "authorization": False}),
            ),
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


def without_request_id(response: httpx.Response) -> dict[str, Any]:
    body = dict(json.loads(response.content))
    body.pop("request_id")
    return body


def test_the_key_is_not_passed_on_to_the_upstream(http: httpx.Client) -> None:
    response = http.get("/orders", headers=with_key("billing"))

    sent = json.dumps(echoed_headers(response))
    assert "x-api-key" not in sent
    assert KEYS["billing"].key not in sent


def test_every_field_carrying_a_key_is_removed_before_forwarding(http: httpx.Client) -> None:
    response = http.get(
        "/orders",
        headers=[
            ("Authorization", f"ApiKey {KEYS['support'].key}"),
            ("X-API-Key", KEYS["billing"].key),
            ("X-Api-Key", KEYS["shop"].key),
        ],
    )

    sent = json.dumps(echoed_headers(response))
    assert echoed_header(response, "x-portico-consumer") == ["acme/billing"]  # the header wins
    assert "x-api-key" not in sent and "ApiKey" not in sent
    assert all(KEYS[name].key not in sent for name in ("billing", "support", "shop"))


def test_a_key_is_accepted_in_the_authorization_header(http: httpx.Client) -> None:
    response = http.get("/orders", headers={"Authorization": f"ApiKey {KEYS['billing'].key}"})

    assert echoed_header(response, "x-portico-consumer") == ["acme/billing"]
    assert echoed_header(response, "authorization") == []


def test_a_route_may_take_the_key_from_another_header(http: httpx.Client) -> None:
    accepted = http.get("/partner", headers={"X-Partner-Key": KEYS["billing"].key})
    default_header = http.get("/partner", headers=with_key("billing"))
    authorization = http.get("/partner", headers={"Authorization": f"ApiKey {KEYS['billing'].key}"})

    assert echoed_header(accepted, "x-portico-consumer") == ["acme/billing"]
    check_problem(default_header, 401, PROBLEMS + "unauthorized")
    check_problem(authorization, 401, PROBLEMS + "unauthorized")


def tampered(key: str) -> str:
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(lambda: tampered(KEYS["billing"].key), id="wrong-secret"),
        pytest.param(
            lambda: "pk_nosuchkey0_" + KEYS["billing"].key.split("_", 2)[2], id="unknown-id"
        ),
        pytest.param(lambda: KEYS["expired"].key, id="expired"),
        pytest.param(lambda: "not-a-key-at-all", id="malformed"),
        pytest.param(lambda: KEYS["billing"].key.upper(), id="wrong-case"),
    ],
)
def test_every_invalid_key_gets_the_same_answer(
    http: httpx.Client, presented: Callable[[], str]
) -> None:
    reference = http.get("/orders", headers={"X-API-Key": "pk_aaaaaaaaaa_" + "A" * 43})
    response = http.get("/orders", headers={"X-API-Key": presented()})

    assert response.status_code == reference.status_code == 401
    assert without_request_id(response) == without_request_id(reference)
    assert response.headers["www-authenticate"] == reference.headers["www-authenticate"]
    assert sorted(response.headers.keys()) == sorted(reference.headers.keys())


def test_the_secret_is_compared_in_constant_time(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    compare = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    first = http.get("/orders", headers=with_key("timing"))  # a key this gateway has not seen
    again = http.get("/orders", headers=with_key("timing"))  # remembered: no hash, no compare
    wrong = http.get("/orders", headers={"X-API-Key": tampered(KEYS["timing"].key)})
    unknown = http.get("/orders", headers={"X-API-Key": "pk_nosuchkey0_secret"})

    statuses = [r.status_code for r in (first, again, wrong, unknown)]
    assert statuses == [200, 200, 401, 401]
    assert len(calls) == 3  # every key that is not a remembered valid one is hashed and compared
    assert calls[0][1] == calls[1][1] == KEYS["timing"].sha256
    assert all(len(presented) == 64 for presented, _ in calls)
