"""A Location the upstream sends back is mapped to the gateway's address and path."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from tests.gateway.conftest import StartGateway
from tests.support.gateway import route, service
from tests.support.upstreams import Upstream

from portico.gateway.forwarding import client_location

TARGET = "http://127.0.0.1:9001"


@pytest.mark.parametrize(
    ("location", "base_path", "prefix", "expected"),
    [
        ("/orders/42", "", "/v1", "/v1/orders/42"),
        (f"{TARGET}/orders/42?x=1", "", "/v1", "https://api.example/v1/orders/42?x=1"),
        ("HTTP://127.0.0.1:9001", "", "", "https://api.example/"),
        (f"{TARGET}?page=2", "", "/p", "https://api.example/p/?page=2"),
        ("/api/orders/1", "/api", "", "/orders/1"),
        ("/api", "/api", "/v1", "/v1/"),
        ("/orders/1", "", "", "/orders/1"),
    ],
)
def test_locations_of_the_target_are_mapped(
    location: str, base_path: str, prefix: str, expected: str
) -> None:
    mapped = client_location(
        location,
        target_origin=TARGET,
        base_path=base_path,
        prefix=prefix,
        client_origin="https://api.example",
    )
    assert mapped == expected


@pytest.mark.parametrize(
    ("location", "base_path"),
    [
        ("https://elsewhere.example/x", ""),  # another host
        ("http://127.0.0.1:90011/x", ""),  # a port that only starts with the target's
        ("//127.0.0.1:9001/x", ""),  # network-path reference
        ("orders/42", ""),  # relative to the current path: already right for the client
        ("/apix/orders", "/api"),  # outside the target's base path
        ("/other", "/api"),
    ],
)
def test_other_locations_are_left_alone(location: str, base_path: str) -> None:
    mapped = client_location(
        location,
        target_origin=TARGET,
        base_path=base_path,
        prefix="/v1",
        client_origin="https://api.example",
    )
    assert mapped is None


def location_from(client: httpx.Client, path: str, location: str) -> str | None:
    response = client.get(f"{path}?set={quote('Location: ' + location)}")
    assert response.status_code == 200, response.text
    return response.headers.get("location")


def test_the_gateway_maps_an_upstream_location(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [
                route("v1", "/v1/{rest:path}", strip_prefix="/v1"),
                route("raw", "/raw/{rest:path}", strip_prefix="/raw", rewrite_location=False),
            ],
        }
    )
    origin = f"http://127.0.0.1:{gateway.port}"
    with gateway.client() as client:
        absolute = location_from(client, "/v1/headers", f"{upstream.url}/orders/42")
        path_only = location_from(client, "/v1/headers", "/orders/42")
        foreign = location_from(client, "/v1/headers", "https://elsewhere.example/x")
        untouched = location_from(client, "/raw/headers", "/orders/42")

    assert absolute == f"{origin}/v1/orders/42"
    assert path_only == "/v1/orders/42"
    assert foreign == "https://elsewhere.example/x"
    assert untouched == "/orders/42"
