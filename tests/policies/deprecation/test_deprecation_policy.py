"""The ``deprecation`` policy, through a real gateway and a real upstream over sockets: the
``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594) and ``Link`` fields on every response of a
deprecated route, Portico's own errors included; 410 ``route-sunset`` once the sunset has
passed, even when it passes while the gateway runs; the calls counted by consumer for
``/metrics``; and the dates ``portico check`` refuses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    RunningGateway,
    check_problem,
    route,
    running_gateway,
    wait_for,
)
from tests.support.upstreams import Upstream, refused_url

from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.identity.apikeys import generate_key
from portico.operations.metrics import exposition, registry

KEY = generate_key()
GUIDE = "https://developer.example.com/migrate-to-v2"
NOTICE = "https://developer.example.com/sunset-v1"
SUNSET = "https://portico.dev/problems/route-sunset"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
LATER = datetime(2099, 7, 1, 12, 30, tzinfo=UTC)
PAST = datetime(2026, 3, 1, tzinfo=UTC)


def deprecation(**settings: Any) -> dict[str, Any]:
    return {"type": "deprecation", **settings}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("deprecation")
    yield server
    server.close()


@pytest.fixture(scope="module")
def soon() -> float:
    """A sunset a few seconds after the gateway starts: it passes while the test runs."""
    return time.time() + 3.0


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, soon: float
) -> Iterator[RunningGateway]:
    announce = deprecation(
        since="2026-01-01", sunset=LATER.isoformat(), link=GUIDE, sunset_link=NOTICE
    )
    config = {
        "services": {
            "main": {"targets": [upstream.url], "retries": 0},
            "dead": {"targets": [refused_url()], "retries": 0, "circuit_breaker": None},
            "v1": {
                "targets": [upstream.url],
                "retries": 0,
                "policies": [deprecation(since="2026-01-01")],
            },
        },
        "tenants": {
            "acme": {"consumers": {"shop": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            route("v1-orders", "/v1/orders", policies=[announce]),
            route(
                "v1-guarded",
                "/v1/guarded",
                policies=[announce, {"type": "auth", "methods": ["api_key"]}],
            ),
            route("v1-down", "/v1/down", service="dead", policies=[announce]),
            route(
                "v0-gone",
                "/v0/orders",
                policies=[deprecation(since="2025-06-01", sunset=PAST.isoformat(), link=GUIDE)],
            ),
            route(
                "v1-soon",
                "/v1/soon",
                policies=[
                    deprecation(
                        since="2026-01-01",
                        sunset=datetime.fromtimestamp(soon, UTC).isoformat(),
                    )
                ],
            ),
            route("v1-service", "/v1/service", service="v1"),
            route("v2-orders", "/v2/orders"),
        ],
    }
    with running_gateway(tmp_path_factory.mktemp("gateway"), config) as running:
        yield running


@pytest.fixture
def http(gateway: RunningGateway) -> Iterator[httpx.Client]:
    with gateway.client() as client:
        yield client


def links(response: httpx.Response) -> list[str]:
    return response.headers.get_list("link")


def assert_announced(response: httpx.Response) -> None:
    assert response.headers["deprecation"] == f"@{int(SINCE.timestamp())}"
    assert parsedate_to_datetime(response.headers["sunset"]) == LATER
    assert response.headers["sunset"] == "Wed, 01 Jul 2099 12:30:00 GMT"
    assert f'<{GUIDE}>; rel="deprecation"; type="text/html"' in links(response)
    assert f'<{NOTICE}>; rel="sunset"; type="text/html"' in links(response)


def test_a_deprecated_route_says_so_and_where_to_go(http: httpx.Client) -> None:
    response = http.get("/v1/orders")
    assert response.status_code == 200
    assert_announced(response)


def test_head_gets_the_fields_too(http: httpx.Client) -> None:
    response = http.head("/v1/orders")
    assert response.status_code == 200
    assert_announced(response)


def test_portico_s_own_errors_on_a_deprecated_route_say_so_too(http: httpx.Client) -> None:
    unauthorized = http.get("/v1/guarded")
    check_problem(unauthorized, 401, "https://portico.dev/problems/unauthorized")
    assert_announced(unauthorized)

    down = http.get("/v1/down")
    check_problem(down, 502, "https://portico.dev/problems/upstream-unavailable")
    assert_announced(down)


def test_a_route_past_its_sunset_is_gone_and_never_reaches_the_upstream(
    http: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.count
    for method in ("GET", "POST", "DELETE"):
        response = http.request(method, "/v0/orders")
        problem = check_problem(response, 410, SUNSET)
        assert problem["detail"] == (
            f"this route was retired on Sun, 01 Mar 2026 00:00:00 GMT; see {GUIDE}"
        )
        assert response.headers["sunset"] == "Sun, 01 Mar 2026 00:00:00 GMT"
        assert (
            response.headers["deprecation"]
            == f"@{int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())}"
        )
    assert upstream.count == before


def test_the_sunset_takes_effect_while_the_gateway_runs(http: httpx.Client, soon: float) -> None:
    if time.time() < soon - 1.0:
        assert http.get("/v1/soon").status_code == 200
    gone = wait_for(
        lambda: (r := http.get("/v1/soon")).status_code == 410 and r, timeout=15.0, what="410"
    )
    check_problem(gone, 410, SUNSET)


def test_a_service_s_deprecation_covers_its_routes_and_others_are_untouched(
    http: httpx.Client,
) -> None:
    assert http.get("/v1/service").headers["deprecation"] == f"@{int(SINCE.timestamp())}"
    current = http.get("/v2/orders")
    assert "deprecation" not in current.headers
    assert "sunset" not in current.headers
    assert not links(current)


def test_calls_are_counted_by_route_and_consumer(
    gateway: RunningGateway, http: httpx.Client
) -> None:
    http.get("/v1/guarded", headers={"X-API-Key": KEY.key})
    http.get("/v1/guarded", headers={"X-API-Key": KEY.key})
    http.get("/v1/guarded")  # refused by auth: still a call to a deprecated route

    def counted() -> dict[tuple[str, ...], int]:
        calls = gateway.gateway.stats.counters["portico_deprecated_requests"]
        return dict(gateway.call(lambda: dict(calls.values)))

    counts = wait_for(lambda: (c := counted()).get(("v1-guarded", "acme/shop")) == 2 and c)
    assert counts[("v1-guarded", "")] >= 1
    assert ("v2-orders", "") not in counts

    text = gateway.call(lambda: exposition(registry(gateway.gateway))).decode()
    assert 'portico_deprecated_requests_total{consumer="acme/shop",route="v1-guarded"} 2.0' in text


def config_text(entry: str) -> str:
    return (
        "services:\n"
        "  main: {targets: ['http://127.0.0.1:9']}\n"
        "routes:\n"
        "  - name: v1\n"
        "    match: {path: /v1}\n"
        "    service: main\n"
        "    policies:\n"
        f"      - {entry}\n"
    )


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        (
            "{type: deprecation, since: 2026-06-01, sunset: 2026-01-01}",
            "sunset",
            "is before the deprecation",
        ),
        (
            "{type: deprecation, since: '2026-06-01T10:00:00'}",
            "since",
            "give the time zone offset",
        ),
        ("{type: deprecation, since: 'next week'}", "since", "is not an ISO 8601 date"),
        ("{type: deprecation}", "since", "missing required key"),
        ("{type: deprecation, since: 2026-01-01, link: 'docs/v2'}", "link", "is not a link"),
        (
            "{type: deprecation, since: 2026-01-01, sunset_link: 'https://x/a b'}",
            "sunset_link",
            "is not a link",
        ),
    ],
)
def test_invalid_dates_and_links_are_refused_at_their_field(
    entry: str, field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_text(entry), "portico.yaml")
    text = str(caught.value)
    assert "portico.yaml:8:" in text, text
    assert f"routes[0].policies[0].{field}" in text, text
    assert message in text, text


def test_dates_with_offsets_and_plain_dates_are_accepted(tmp_path: Path) -> None:
    entry = (
        "{type: deprecation, since: 2026-01-01, sunset: '2026-01-01T09:00:00+01:00', "
        "link: /docs/migrate}"
    )
    load_config_text(config_text(entry), "portico.yaml")
