"""``responses: report``: the upstream's answers checked against the document, what does not
match logged in one line and counted, and never blocked or changed."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.policies.validation.orders_upstream import OrdersUpstream
from tests.support.gateway import RunningGateway, route, running_gateway

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def upstream() -> Iterator[OrdersUpstream]:
    server = OrdersUpstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: OrdersUpstream
) -> Iterator[RunningGateway]:
    directory = tmp_path_factory.mktemp("gateway")
    shutil.copy(HERE / "orders.yaml", directory / "orders.yaml")
    config = {
        "services": {"orders": {"targets": [upstream.url], "openapi": "orders.yaml"}},
        "routes": [
            route(
                "reported",
                "/api/{rest:path}",
                service="orders",
                policies=[{"type": "validation", "responses": "report"}],
            ),
            route(
                "small",
                "/small/{rest:path}",
                service="orders",
                upstream_path="/api/{rest:path}",
                policies=[
                    {
                        "type": "validation",
                        "responses": "report",
                        "response_max_body_size": 10,
                        "base_path": "/api",
                    }
                ],
            ),
        ],
    }
    with running_gateway(directory, config) as running:
        yield running


def failures(gateway: RunningGateway, route_name: str) -> int:
    counted = gateway.gateway.stats.counters["portico_validation_failures"]
    counts = gateway.call(lambda: dict(counted.values))
    return counts.get((route_name, "response"), 0)


def test_a_response_that_breaks_the_document_is_logged_and_counted_not_blocked(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    before = failures(gateway, "reported")
    with caplog.at_level(logging.WARNING, logger="portico.validation"), gateway.client() as http:
        response = http.get("/api/orders/13")

    assert response.status_code == 200
    assert response.json()["qty"] == "many"  # relayed as the upstream sent it
    assert failures(gateway, "reported") == before + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "portico.validation"]
    assert len(lines) == 1
    assert "route reported (getOrder) status 200" in lines[0]
    assert '/qty: "many" is not of type "integer"' in lines[0]


def test_a_response_that_matches_is_not_reported(gateway: RunningGateway) -> None:
    before = failures(gateway, "reported")
    with gateway.client() as http:
        assert http.get("/api/orders/7").status_code == 200
        assert http.get("/api/orders").status_code == 200
        assert http.delete("/api/orders/7").status_code == 204
    assert failures(gateway, "reported") == before


def test_a_status_the_document_does_not_describe_is_reported(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    before = failures(gateway, "reported")
    with caplog.at_level(logging.WARNING, logger="portico.validation"), gateway.client() as http:
        assert http.get("/api/orders/500").status_code == 500
    assert failures(gateway, "reported") == before + 1
    assert "status 500 is not described" in caplog.text


def test_portico_own_answers_and_bodies_over_the_limit_are_not_checked(
    gateway: RunningGateway,
) -> None:
    before = failures(gateway, "small")
    with gateway.client() as http:
        assert http.get("/small/orders/0").status_code == 400
        response = http.get("/small/orders/13")
    assert response.status_code == 200
    assert failures(gateway, "small") == before
