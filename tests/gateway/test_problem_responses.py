"""Every error Portico produces is problem+json with a stable type and the request id.

Each kind of error is provoked through a running gateway over a raw socket, and the response
checked against the contract of docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from tests.gateway.conftest import StartGateway
from tests.support.gateway import (
    RawConnection,
    RawResponse,
    RunningGateway,
    check_raw_problem,
    route,
    service,
    wait_for,
)
from tests.support.upstreams import Upstream, refused_url

BASE = "https://portico.dev/problems/"


@dataclass(frozen=True)
class Setup:
    gateway: RunningGateway
    upstream: Upstream
    refused_port: int


def make_setup(upstream: Upstream, start_gateway: StartGateway) -> Setup:
    refused = refused_url()
    gateway = start_gateway(
        {
            "gateway": {"header_timeout": "0.3s"},
            "services": {
                "main": service(upstream.url),
                "refused": service(refused, retries=0, circuit_breaker=None),
                "slow": service(upstream.url, retries=0, timeouts={"read": "0.3s"}),
                "broken": service(refused, retries=0, circuit_breaker={"failure_threshold": 1}),
            },
            "routes": [
                route("items", "/items", methods=["GET"]),
                route("small", "/small/{rest:path}", max_body_size=100),
                route("refused", "/refused/{rest:path}", "refused"),
                route("slow", "/slow-svc/{rest:path}", "slow", strip_prefix="/slow-svc"),
                route("broken", "/broken/{rest:path}", "broken"),
                route("no-ws", "/no-ws/{rest:path}", websocket=False),
                route("up", "/up/{rest:path}", strip_prefix="/up"),
            ],
        }
    )
    return Setup(gateway, upstream, int(refused.rsplit(":", 1)[1]))


def exchange(setup: Setup, data: bytes) -> RawResponse:
    with RawConnection(setup.gateway.port) as conn:
        conn.send(data)
        return conn.read_response()


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: api.test\r\n{extra}\r\n".encode()


def provoke_bad_request(setup: Setup) -> RawResponse:
    return exchange(setup, b"NOT HTTP AT ALL\r\n\r\n")


def provoke_oversized_head(setup: Setup) -> RawResponse:
    return exchange(setup, get("/items", "X-Big: " + "a" * 70_000 + "\r\n"))


def provoke_upgrade_not_allowed(setup: Setup) -> RawResponse:
    return exchange(
        setup,
        get(
            "/no-ws/chat",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
    )


def provoke_not_found(setup: Setup) -> RawResponse:
    return exchange(setup, get("/nowhere"))


def provoke_method_not_allowed(setup: Setup) -> RawResponse:
    return exchange(setup, b"DELETE /items HTTP/1.1\r\nHost: api.test\r\n\r\n")


def provoke_request_timeout(setup: Setup) -> RawResponse:
    with RawConnection(setup.gateway.port) as conn:
        conn.send(b"GET /items HTTP/1.1\r\nHost: api.test\r\nX-Slow")
        return conn.read_response()


def provoke_too_large(setup: Setup) -> RawResponse:
    return exchange(
        setup, b"POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
    )


def provoke_too_large_chunked(setup: Setup) -> RawResponse:
    """The body grows past the limit while it already streams to the upstream."""
    chunk = b"40\r\n" + b"y" * 64 + b"\r\n"
    with RawConnection(setup.gateway.port) as conn:
        conn.send(
            b"POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk
        )
        wait_for(lambda: setup.upstream.in_flight == 1, what="the request to reach the upstream")
        conn.send(chunk * 2)
        return conn.read_response()


def provoke_too_large_chunked_at_once(setup: Setup) -> RawResponse:
    chunk = b"40\r\n" + b"y" * 64 + b"\r\n"
    return exchange(
        setup,
        b"POST /small/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3,
    )


def provoke_upstream_unavailable(setup: Setup) -> RawResponse:
    return exchange(setup, get("/refused/x"))


def provoke_no_healthy_upstream(setup: Setup) -> RawResponse:
    first = exchange(setup, get("/broken/x"))
    assert first.status == 502, first
    return exchange(setup, get("/broken/x"))


def provoke_upstream_timeout(setup: Setup) -> RawResponse:
    return exchange(setup, get("/slow-svc/slow?head=10"))


@dataclass(frozen=True)
class Case:
    provoke: Callable[[Setup], RawResponse]
    status: int
    slug: str


CASES = {
    "bad-request": Case(provoke_bad_request, 400, "bad-request"),
    "oversized-head": Case(provoke_oversized_head, 431, "request-header-fields-too-large"),
    "upgrade-not-allowed": Case(provoke_upgrade_not_allowed, 400, "upgrade-not-allowed"),
    "route-not-found": Case(provoke_not_found, 404, "route-not-found"),
    "method-not-allowed": Case(provoke_method_not_allowed, 405, "method-not-allowed"),
    "request-timeout": Case(provoke_request_timeout, 408, "request-timeout"),
    "request-too-large": Case(provoke_too_large, 413, "request-too-large"),
    "request-too-large-chunked": Case(provoke_too_large_chunked, 413, "request-too-large"),
    "request-too-large-chunked-at-once": Case(
        provoke_too_large_chunked_at_once, 413, "request-too-large"
    ),
    "upstream-unavailable": Case(provoke_upstream_unavailable, 502, "upstream-unavailable"),
    "no-healthy-upstream": Case(provoke_no_healthy_upstream, 503, "no-healthy-upstream"),
    "upstream-timeout": Case(provoke_upstream_timeout, 504, "upstream-timeout"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_is_a_problem_document_with_a_stable_type(
    name: str, upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    case = CASES[name]
    response = case.provoke(setup)
    problem = check_raw_problem(
        response,
        case.status,
        BASE + case.slug,
        secrets=(str(upstream.port), str(setup.refused_port), "127.0.0.1"),
    )
    assert response.header("cache-control") == "no-store"
    assert set(problem) <= {"type", "title", "status", "detail", "request_id"} | EXTENSIONS.get(
        case.slug, set()
    )


EXTENSIONS = {"request-too-large": {"max_body_size"}}
"""The extension members (RFC 9457 §3.2) a problem type documents in docs/errors.md."""


def test_too_large_says_the_limit_as_the_config_writes_it(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    problem = check_raw_problem(
        CASES["request-too-large"].provoke(setup), 413, BASE + "request-too-large"
    )
    assert problem["detail"] == "the request body is limited to 100 bytes here"
    assert problem["max_body_size"] == 100


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/nowhere", 404),
        ("/refused/x", 502),
    ],
)
def test_problem_carries_the_request_id_the_client_sent(
    target: str, status: int, upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    response = exchange(setup, get(target, "X-Request-ID: order-4711.retry-2\r\n"))
    problem = check_raw_problem(response, status, response_type(status))
    assert problem["request_id"] == "order-4711.retry-2"
    assert response.header("x-request-id") == "order-4711.retry-2"


def response_type(status: int) -> str:
    return BASE + {404: "route-not-found", 502: "upstream-unavailable"}[status]


@pytest.mark.parametrize("name", ["bad-request", "request-too-large", "request-too-large-chunked"])
def test_connection_is_closed_after_an_unrecoverable_request_error(
    name: str, upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    request = {
        "bad-request": b"NOT HTTP AT ALL\r\n\r\n",
        "request-too-large": b"POST /small/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",
        "request-too-large-chunked": b"POST /small/x HTTP/1.1\r\nHost: a\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"40\r\n" + b"z" * 64 + b"\r\n") * 3,
    }[name]
    with RawConnection(setup.gateway.port) as conn:
        conn.send(request)
        response = conn.read_response()
        assert response.status in (400, 413)
        assert conn.is_closed()


def test_upstream_errors_pass_through_unchanged(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    response = exchange(setup, get("/items?x=1"))
    assert response.status == 200
    for status in (404, 500, 503):
        with RawConnection(setup.gateway.port) as conn:
            conn.send(get(f"/up/status/{status}"))
            response = conn.read_response()
        assert response.status == status
        assert response.header("content-type") == "application/json"
        assert response.json() == {"upstream": "main", "status": status}


def test_request_timeout_closes_a_connection_that_never_finishes_its_head(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    setup = make_setup(upstream, start_gateway)
    with RawConnection(setup.gateway.port) as conn:
        conn.send(b"GET /items HTTP/1.1\r\n")
        response = conn.read_response()
        assert response.status == 408
        assert conn.is_closed()
