"""The traffic policies on one route, and clients that are slow or go away, through a real gateway
over sockets.

One route runs ``cors``, ``deprecation``, ``rate-limit``, ``cache`` and ``mask`` together: a hit
served from the cache carries each policy's fields exactly once, for *this* request (its rate
limit, its origin), and the body masked as stored. Then the ways a client breaks an exchange
halfway: a body that stops coming (408, still with CORS fields, and an idempotency key freed for
the retry), a client that leaves in the middle of its body or of a cached response, a client that
leaves before the answer of a rate-limited request. After each, the next request is served whole.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.policies.cache.origin import Origin
from tests.support.gateway import RawConnection, RunningGateway, route, running_gateway

ORIGIN = "https://app.example"
LIMIT = {"type": "rate-limit", "limits": [{"name": "burst", "limit": 1000, "window": "1h"}]}
CACHED = "/all/item?h=Cache-Control:max-age%3D60&size=40"


def gateway_config(origin: Origin) -> dict[str, Any]:
    cors = {"type": "cors", "origins": [ORIGIN], "methods": ["GET", "POST"]}
    return {
        "gateway": {"body_timeout": "1s"},
        "services": {"main": {"targets": [origin.url], "retries": 0}},
        "routes": [
            route(
                "all",
                "/all/{rest:path}",
                policies=[
                    cors,
                    {
                        "type": "deprecation",
                        "since": "2026-01-01T00:00:00Z",
                        "sunset": "2099-01-01T00:00:00Z",
                        "link": "https://docs.example/migrate",
                    },
                    {
                        "type": "rate-limit",
                        "limits": [{"name": "burst", "limit": 1000, "window": "1h"}],
                    },
                    {"type": "cache"},
                    {"type": "mask", "mask": ["padding"], "remove": ["host"]},
                ],
            ),
            route(
                "pay",
                "/pay/{rest:path}",
                methods=["POST"],
                policies=[cors, {"type": "idempotency", "required": True}],
            ),
            route(
                "big",
                "/big/{rest:path}",
                policies=[{"type": "cache"}],
            ),
        ],
    }


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, origin: Origin) -> Iterator[RunningGateway]:
    with running_gateway(tmp_path_factory.mktemp("together"), gateway_config(origin)) as running:
        yield running


def get(gateway: RunningGateway, target: str, *fields: tuple[str, str]) -> Any:
    with RawConnection(gateway.port) as conn:
        head = "".join(f"{name}: {value}\r\n" for name, value in fields)
        conn.send(f"GET {target} HTTP/1.1\r\nHost: api.example\r\n{head}\r\n".encode())
        return conn.read_response()


def values(response: Any, name: str) -> list[str]:
    return [v for k, v in response.headers if k.lower() == name]


def remaining(response: Any) -> int:
    (field,) = values(response, "ratelimit")
    return int(field.split(";r=")[1].split(";")[0])


def test_a_cache_hit_carries_every_policys_fields_once_for_this_request(
    gateway: RunningGateway,
) -> None:
    first = get(gateway, CACHED, ("Origin", ORIGIN))
    second = get(gateway, CACHED, ("Origin", ORIGIN))

    for response in (first, second):
        assert response.status == 200
        assert values(response, "access-control-allow-origin") == [ORIGIN]
        assert len(values(response, "deprecation")) == 1
        assert len(values(response, "sunset")) == 1
        (link,) = values(response, "link")
        assert link.startswith('<https://docs.example/migrate>; rel="deprecation"')
        assert len(values(response, "ratelimit")) == 1
        assert len(values(response, "ratelimit-policy")) == 1
        assert len(values(response, "cache-status")) == 1
        body = response.json()
        assert body["padding"] == "****" and "host" not in body  # masked as stored
    assert first.header("cache-status") == "Portico; fwd=miss; stored"
    assert second.header("cache-status").startswith("Portico; hit")
    assert second.json()["n"] == first.json()["n"]  # from the cache: the origin saw one
    assert remaining(second) == remaining(first) - 1  # the hit was counted, for itself

    other = get(gateway, CACHED, ("Origin", "https://evil.example"))
    assert other.header("cache-status").startswith("Portico; hit")
    assert values(other, "access-control-allow-origin") == []  # not the stored request's


def paid(origin: Origin) -> int:
    return sum(1 for method, target, _ in origin.requests if method == "POST")


def test_a_body_that_stops_coming_is_408_with_cors_fields_and_frees_the_key(
    gateway: RunningGateway, origin: Origin
) -> None:
    key = '"stalled-1"'
    sent = paid(origin)
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /pay/charge HTTP/1.1\r\nHost: api.example\r\nOrigin: "
            + ORIGIN.encode()
            + b"\r\nIdempotency-Key: "
            + key.encode()
            + b"\r\nContent-Type: application/json"
            + b"\r\nContent-Length: 40\r\n\r\n"
            + b'{"amount": 1'
        )
        stalled = conn.read_response()  # after gateway.body_timeout (1 s)

    assert stalled.status == 408
    assert values(stalled, "access-control-allow-origin") == [ORIGIN]

    body = b'{"amount": 10, "currency": "EUR"}       '  # 40 bytes
    retried = post(gateway, "/pay/charge", body, key)
    assert retried.status == 200  # not 409: the stalled attempt holds no lock
    assert paid(origin) == sent + 1  # the stalled request never reached the upstream


def test_a_client_that_leaves_inside_its_body_frees_the_key(
    gateway: RunningGateway, origin: Origin
) -> None:
    key = '"left-1"'
    sent = paid(origin)
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /pay/charge HTTP/1.1\r\nHost: api.example\r\nIdempotency-Key: "
            + key.encode()
            + b"\r\nContent-Length: 1000\r\n\r\n"
            + b"x" * 100
        )
    body = b"y" * 1000
    retried = wait_for_status(lambda: post(gateway, "/pay/charge", body, key), 200)
    assert retried.status == 200
    again = post(gateway, "/pay/charge", body, key)
    assert again.status == 200 and again.json() == retried.json()  # replayed, the first answer
    assert paid(origin) == sent + 1  # the cut request never reached the upstream


def test_a_client_that_leaves_inside_a_cached_response_leaves_nothing_partial(
    gateway: RunningGateway,
) -> None:
    target = "/big/file?h=Cache-Control:max-age%3D60&size=3000000"
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: api.example\r\n\r\n".encode())
        sock.recv(65536)  # the head and the start of the body; then gone

    for _ in range(2):
        whole = get(gateway, target)
        assert whole.status == 200
        assert len(whole.json()["padding"]) == 3_000_000  # complete JSON, never a cut copy


def test_a_client_that_leaves_before_a_limited_answer_breaks_nothing(
    gateway: RunningGateway,
) -> None:
    target = "/all/fresh?h=Cache-Control:no-store"
    before = remaining(get(gateway, target))
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: api.example\r\n\r\n".encode())
    after = wait_for_status(lambda: get(gateway, target), 200)
    # Each request that got in was counted once, and the gateway still answers whole.
    assert before - 6 <= remaining(after) <= before - 1
    assert after.json()["padding"] == "****"


def post(gateway: RunningGateway, path: str, body: bytes, key: str) -> Any:
    with RawConnection(gateway.port) as conn:
        conn.send(
            f"POST {path} HTTP/1.1\r\nHost: api.example\r\nIdempotency-Key: {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        return conn.read_response()


def wait_for_status(call: Any, status: int, timeout: float = 10.0) -> Any:
    """The first answer of ``status`` (the gateway notices a client gone on its next read)."""
    deadline = time.monotonic() + timeout
    while True:
        response = call()
        if response.status == status or time.monotonic() > deadline:
            return response
        time.sleep(0.1)
