"""Portico's own answers to a routed request pass through the route's response hooks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.gateway import RawConnection, check_problem, running_gateway
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key

KEY = generate_key()
STAMP = [{"type": "headers", "response": {"set": {"X-Stamp": "portico"}}}]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("main")
    yield server
    server.close()


def config(upstream: Upstream) -> dict[str, object]:
    return {
        "services": {
            "main": {"targets": [upstream.url], "retries": 0},
            "gone": {"targets": [refused_url()], "retries": 0},
        },
        "tenants": {
            "t": {"consumers": {"c": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            {
                "name": "guarded",
                "match": {"path": "/guarded"},
                "service": "main",
                # auth answers first: the headers policy after it never sees the request, but its
                # response field is on the 401 all the same.
                "policies": [{"type": "auth", "methods": ["api_key"]}, *STAMP],
            },
            {"name": "gone", "match": {"path": "/gone"}, "service": "gone", "policies": STAMP},
            {"name": "ok", "match": {"path": "/ok"}, "service": "main", "policies": STAMP},
        ],
    }


def test_a_policy_reply_and_an_upstream_failure_carry_the_routes_response_fields(
    tmp_path: Path, upstream: Upstream
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway, gateway.client() as http:
        refused = http.get("/guarded")
        check_problem(refused, 401, "https://portico.dev/problems/unauthorized")
        assert refused.headers["x-stamp"] == "portico"
        assert http.get("/guarded", headers={"X-API-Key": KEY.key}).headers["x-stamp"] == "portico"
        failed = http.get("/gone")
        check_problem(failed, 502, "https://portico.dev/problems/upstream-unavailable")
        assert failed.headers["x-stamp"] == "portico"
        assert http.get("/ok").headers["x-stamp"] == "portico"
        # No route, no hooks: a 404 is Portico's alone.
        assert "x-stamp" not in http.get("/nothing").headers


def test_a_stalled_body_on_a_route_gets_its_408_with_the_routes_fields(
    tmp_path: Path, upstream: Upstream
) -> None:
    settings = config(upstream)
    settings["gateway"] = {"body_timeout": "1s"}
    with running_gateway(tmp_path, settings) as gateway, RawConnection(gateway.port) as conn:
        conn.send(b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        response = conn.read_response()
    assert response.status == 408
    assert response.header("x-stamp") == "portico"
