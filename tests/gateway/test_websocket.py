"""WebSocket upgrades through the gateway, checked with the ``websockets`` client."""

from __future__ import annotations

import pytest
from tests.gateway.conftest import StartGateway
from tests.support.gateway import RawConnection, check_raw_problem, route, service
from tests.support.upstreams import Upstream, WebSocketEcho
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect


def ws_config(ws_url: str, http_url: str) -> dict[str, object]:
    return {
        "services": {"ws": service(ws_url), "http": service(http_url)},
        "routes": [
            route("chat", "/chat/{rest:path}", "ws", strip_prefix="/chat"),
            route("closed", "/closed/{rest:path}", "ws", websocket=False),
            route("http", "/{rest:path}", "http"),
        ],
    }


def test_websocket_messages_are_echoed_through_the_gateway(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(ws_config(ws_echo.url, upstream.url))
    with connect(f"ws://127.0.0.1:{gateway.port}/chat/room/1?user=ann", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01binary\xff")
        assert ws.recv(timeout=10) == b"\x00\x01binary\xff"
        big = "x" * 1_000_000
        ws.send(big)
        assert ws.recv(timeout=10) == big
        for i in range(50):
            ws.send(f"message {i}")
        assert [ws.recv(timeout=10) for _ in range(50)] == [f"message {i}" for i in range(50)]
    assert ws_echo.paths == ["/room/1?user=ann"]
    headers = ws_echo.headers[0]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "x-request-id" in headers


def test_http_requests_still_work_next_to_a_websocket(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(ws_config(ws_echo.url, upstream.url))
    with connect(f"ws://127.0.0.1:{gateway.port}/chat/", open_timeout=10) as ws:
        with gateway.client() as http:
            assert http.get("/plain").json()["path"] == "/plain"
        ws.send("still open")
        assert ws.recv(timeout=10) == "still open"


def test_upgrade_on_a_route_without_websocket_is_400_problem(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(ws_config(ws_echo.url, upstream.url))
    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{gateway.port}/closed/x", open_timeout=10)
    assert caught.value.response.status_code == 400
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /closed/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        check_raw_problem(
            conn.read_response(),
            400,
            "https://portico.dev/problems/upgrade-not-allowed",
            secrets=(str(ws_echo.port),),
        )
    assert ws_echo.paths == []


def test_upgrade_with_a_method_other_than_get_is_refused(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(ws_config(ws_echo.url, upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /chat/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        check_raw_problem(
            conn.read_response(), 400, "https://portico.dev/problems/upgrade-not-allowed"
        )


def test_close_from_the_upstream_reaches_the_client(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(ws_config(ws_echo.url, upstream.url))
    with connect(f"ws://127.0.0.1:{gateway.port}/chat/", open_timeout=10) as ws:
        ws.send("close please")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "asked to")


@pytest.mark.parametrize(
    "policies",
    [
        pytest.param([], id="fields-only"),  # the upstream's head stays bytes
        pytest.param([{"type": "headers", "response": {"add": {"x-hi": "1"}}}], id="text"),
    ],
)
def test_an_upgrade_on_a_limited_route_carries_the_rate_limit_fields(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway, policies: list[object]
) -> None:
    """``RateLimit`` and ``RateLimit-Policy`` are on every answer of a limited route, the ``101``
    that opens a WebSocket included, whichever way the gateway relays the upstream's head."""
    limit = {"type": "rate-limit", "limits": [{"name": "burst", "limit": 100, "window": "1m"}]}
    config = ws_config(ws_echo.url, upstream.url)
    config["routes"] = [
        route("chat", "/chat/{rest:path}", "ws", strip_prefix="/chat", policies=[limit, *policies])
    ]
    gateway = start_gateway(config)
    with connect(f"ws://127.0.0.1:{gateway.port}/chat/room", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        fields = ws.response.headers
    assert fields.get_all("ratelimit-policy") == ['"burst";q=100;w=60']
    assert len(fields.get_all("ratelimit")) == 1
    assert fields["ratelimit"].startswith('"burst";r=99;t=')
