"""A service's lifecycle as its routes serve it, through a real gateway and real upstreams over
sockets: ``deprecated`` announces itself on every response of every route (the ``deprecation``
policy's fields, Portico's own errors included), a route's own ``deprecation`` entry winning;
``retired`` answers 410 ``route-sunset`` to every method and spelling of the path, whatever
entry a route has; ``design`` routes answer 404 as if they were not written, and their backend
is neither called nor probed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from tests.support.gateway import RunningGateway, check_problem, route, running_gateway
from tests.support.upstreams import Upstream

from portico.identity.apikeys import generate_key

KEY = generate_key()
GUIDE = "https://developer.example.com/orders/migrate-to-v2"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
OWN_SINCE = datetime(2025, 9, 1, tzinfo=UTC)
SUNSET = "https://portico.dev/problems/route-sunset"
NOT_FOUND = "https://portico.dev/problems/route-not-found"


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("lifecycle")
    yield server
    server.close()


@pytest.fixture(scope="module")
def drafted() -> Iterator[Upstream]:
    """The backend of the service in design: nothing may reach it."""
    server = Upstream("draft")
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, drafted: Upstream
) -> Iterator[RunningGateway]:
    auth = {"type": "auth", "methods": ["api_key"]}
    config = {
        "services": {
            "current": {"targets": [upstream.url], "retries": 0},
            "v1": {
                "targets": [upstream.url],
                "retries": 0,
                "lifecycle": {
                    "state": "deprecated",
                    "since": "2026-01-01",
                    "sunset": "2099-07-01T12:30:00Z",
                    "link": GUIDE,
                },
            },
            "v0": {
                "targets": [upstream.url],
                "retries": 0,
                "lifecycle": {"state": "retired", "sunset": "2026-03-01", "link": GUIDE},
            },
            "next": {
                "targets": [drafted.url],
                "retries": 0,
                "lifecycle": "design",
                "health_check": {"active": {"path": "/health", "interval": "100ms"}},
            },
        },
        "tenants": {
            "acme": {"consumers": {"shop": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            route("v1-orders", "/v1/orders", service="v1"),
            route("v1-guarded", "/v1/guarded", service="v1", policies=[auth]),
            route(
                "v1-own",
                "/v1/own",
                service="v1",
                policies=[{"type": "deprecation", "since": OWN_SINCE.isoformat()}],
            ),
            route("v0-orders", "/v0/orders/{rest:path}", service="v0", policies=[auth]),
            route(
                "v0-hopeful",
                "/v0/hopeful",
                service="v0",
                policies=[{"type": "deprecation", "since": "2025-01-01", "sunset": "2099-01-01"}],
            ),
            route("next-orders", "/next/orders/{rest:path}", service="next"),
            route("current", "/current/orders", service="current"),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def test_every_route_of_a_deprecated_service_announces_it(http: httpx.Client) -> None:
    for path in ("/v1/orders", "/v1/guarded"):
        response = http.get(path, headers={"X-API-Key": KEY.key})
        assert response.status_code == 200, path
        assert response.headers["deprecation"] == f"@{int(SINCE.timestamp())}"
        assert response.headers["sunset"] == "Wed, 01 Jul 2099 12:30:00 GMT"
        assert f'<{GUIDE}>; rel="deprecation"; type="text/html"' in response.headers.get_list(
            "link"
        )


def test_portico_s_own_refusals_on_a_deprecated_service_announce_it_too(
    http: httpx.Client,
) -> None:
    for headers in ({}, {"X-API-Key": "wrong"}, {"x-api-key": KEY.key + "x"}):
        response = http.get("/v1/guarded", headers=headers)
        assert response.status_code == 401
        assert response.headers["deprecation"] == f"@{int(SINCE.timestamp())}"


def test_a_route_s_own_deprecation_entry_wins_over_the_lifecycle(http: httpx.Client) -> None:
    response = http.get("/v1/own")
    assert response.status_code == 200
    assert response.headers.get_list("deprecation") == [f"@{int(OWN_SINCE.timestamp())}"]
    assert "sunset" not in response.headers


def test_a_retired_service_is_gone_for_every_method_and_spelling(
    http: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.count
    attempts = [
        ("GET", "/v0/orders/1"),
        ("POST", "/v0/orders/1"),
        ("DELETE", "/v0/orders"),
        ("HEAD", "/v0/orders/1"),
        ("GET", "/v0/%6Frders/1"),
        ("GET", "/v0/orders/../orders/1"),
        ("GET", "/v0//orders/1"),
        ("GET", "/v0/orders/1?api_key=x"),
    ]
    for method, path in attempts:
        response = http.request(method, path, headers={"X-API-Key": KEY.key})
        assert response.status_code == 410, (method, path, response.status_code)
        if method != "HEAD":
            problem = check_problem(response, 410, SUNSET)
            assert problem["detail"] == f"this route is retired; see {GUIDE}"
        assert response.headers["sunset"] == "Sun, 01 Mar 2026 00:00:00 GMT"
    # Gone before authentication: a caller without a key learns the same, not a 401.
    check_problem(http.get("/v0/orders/1"), 410, SUNSET)
    assert upstream.count == before


def test_retired_wins_over_a_route_s_own_deprecation_with_a_later_sunset(
    http: httpx.Client,
) -> None:
    check_problem(http.get("/v0/hopeful"), 410, SUNSET)


def test_routes_of_a_service_in_design_are_not_served_nor_its_backend_probed(
    http: httpx.Client, drafted: Upstream
) -> None:
    for method, path in [
        ("GET", "/next/orders/1"),
        ("POST", "/next/orders"),
        ("GET", "/next/%6Frders/1"),
        ("GET", "/next/orders/"),
        ("OPTIONS", "/next/orders/1"),
    ]:
        response = http.request(method, path, headers={"X-API-Key": KEY.key})
        check_problem(response, 404, NOT_FOUND)
    # The same answer as a path no route was ever written for: nothing tells them apart.
    unknown = http.get("/never/written")
    assert unknown.status_code == 404
    assert unknown.json()["title"] == http.get("/next/orders/1").json()["title"]
    time.sleep(0.5)  # five probe intervals of the design service's health check
    assert drafted.received == []
    assert drafted.health_probes == 0


def test_other_services_are_untouched(http: httpx.Client) -> None:
    response = http.get("/current/orders")
    assert response.status_code == 200
    assert "deprecation" not in response.headers
    assert "sunset" not in response.headers
