"""Ways around a route's policy, and waits without end, tried with raw sockets (issue: hardening
the data plane). The differential comparison with nginx is in test_conformance_nginx.py; these are
the cases nginx cannot serve as a reference for, or that need a look at Portico's own state."""

from __future__ import annotations

import logging
import time

import pytest
from tests.gateway.conftest import StartGateway
from tests.support.gateway import (
    RawConnection,
    check_raw_problem,
    proxy_config,
    route,
    service,
    wait_for,
)
from tests.support.upstreams import Upstream, WebSocketEcho, pattern_crc32
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

PROBLEMS = "https://portico.dev/problems/"


def exchange(port: int, request: bytes) -> tuple[RawConnection, object]:
    conn = RawConnection(port, timeout=10)
    conn.send(request)
    return conn, conn.read_response()


def test_a_refused_upgrade_closes_the_connection_at_once(
    ws_echo: WebSocketEcho, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"ws": service(ws_echo.url), "http": service(upstream.url)},
            "routes": [
                route("closed", "/closed/{rest:path}", "ws", websocket=False),
                route("http", "/{rest:path}", "http"),
            ],
        }
    )
    upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    for request in (
        b"GET /closed/x HTTP/1.1\r\nHost: a\r\n" + upgrade + b"\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"CONNECT upstream.example:443 HTTP/1.1\r\nHost: upstream.example:443\r\n\r\n",
    ):
        with RawConnection(gateway.port) as conn:
            conn.send(request)
            response = conn.read_response()
            assert response.status == 400, response
            assert response.header("connection") == "close"
            assert conn.is_closed(timeout=5)  # not after the 75 s keep-alive timeout
    assert ws_echo.paths == []
    assert all(r.header("upgrade") is None for r in upstream.received)


def test_h2c_is_never_relayed_even_on_a_websocket_route(
    ws_echo: WebSocketEcho, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {"services": {"ws": service(ws_echo.url)}, "routes": [route("ws", "/{rest:path}", "ws")]}
    )
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
        )
        check_raw_problem(conn.read_response(), 400, PROBLEMS + "upgrade-not-allowed")
    assert ws_echo.paths == []


def test_an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout(
    ws_echo: WebSocketEcho, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "gateway": {"tunnel_idle_timeout": "2s"},
            "services": {"ws": service(ws_echo.url)},
            "routes": [route("ws", "/{rest:path}", "ws")],
        }
    )
    with connect(f"ws://127.0.0.1:{gateway.port}/room", open_timeout=10) as ws:
        # Traffic keeps it open past the timeout...
        for _ in range(4):
            ws.send("ping")
            assert ws.recv(timeout=5) == "ping"
            time.sleep(0.8)
        # ...silence closes it (without the timeout, recv would time out instead).
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


def test_a_response_with_another_transfer_coding_is_relayed_whole_with_its_coding(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    size = 300_000
    with RawConnection(gateway.port, timeout=20) as conn:
        conn.send(b"GET /bytes/%d?framing=coded HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        response = conn.read_response()
    assert response.status == 200
    assert response.header("transfer-encoding") == "gzip, chunked"
    import zlib

    assert len(response.body) == size
    assert zlib.crc32(response.body) == pattern_crc32(size)
    with RawConnection(gateway.port, timeout=20) as conn:
        conn.send(b"GET /bytes/10?framing=coded HTTP/1.0\r\nHost: a\r\n\r\n")
        check_raw_problem(conn.read_response(), 502, PROBLEMS + "upstream-unavailable")


@pytest.mark.parametrize(
    ("request_line", "status", "kind"),
    [
        (b"GET / HTTP/2.0", 505, "http-version-not-supported"),
        (b"GET / HTTP/1.2", 400, "bad-request"),  # not a version at all, for the parser
    ],
)
def test_versions_other_than_1_0_and_1_1_are_refused(
    request_line: bytes, status: int, kind: str, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(request_line + b"\r\nHost: a\r\n\r\n")
        check_raw_problem(conn.read_response(), status, PROBLEMS + kind)
    assert upstream.count == 0


@pytest.mark.parametrize(
    ("codings", "status", "kind"),
    [
        (b"Transfer-Encoding: gzip, chunked\r\n", 501, "transfer-coding-not-implemented"),
        (b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", 501, None),
        (b"Transfer-Encoding: gzip\r\n", 400, "bad-request"),
        (b"Transfer-Encoding: chunked, gzip\r\n", 400, "bad-request"),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400, "bad-request"),
    ],
)
def test_transfer_codings_other_than_chunked_are_refused(
    codings: bytes, status: int, kind: str | None, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\n" + codings + b"\r\n5\r\nhello\r\n0\r\n\r\n")
        check_raw_problem(
            conn.read_response(), status, PROBLEMS + (kind or "transfer-coding-not-implemented")
        )
        assert conn.is_closed(timeout=3)
    assert upstream.count == 0


def test_http_1_0_with_transfer_encoding_is_400(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        check_raw_problem(conn.read_response(), 400, PROBLEMS + "bad-request")
    assert upstream.count == 0


def test_the_head_limit_counts_every_byte_and_every_field(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    too_large = PROBLEMS + "request-header-fields-too-large"
    # 65,000 one-byte fields: 64 KiB of names and values would pass, the bytes sent do not.
    many = b"".join(b"a:b\r\n" for _ in range(65_000))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
        check_raw_problem(conn.read_response(), 431, too_large)
    # 101 fields pass no byte limit, but the default field limit is 100.
    fields = b"".join(b"X-F-%d: v\r\n" % i for i in range(100))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
        check_raw_problem(conn.read_response(), 431, too_large)
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\n" + fields[: fields.index(b"X-F-99")] + b"\r\n")
        assert conn.read_response().status == 200
    assert upstream.count == 1


def test_header_names_with_underscores_never_reach_the_upstream(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /x HTTP/1.1\r\nHost: a\r\nX_Portico_Consumer: t/root\r\n"
            b"x_portico_scopes: admin\r\nX_Forwarded_For: 10.0.0.1\r\nX_Request_Id: forged\r\n"
            b"X-Kept: yes\r\n\r\n"
        )
        assert conn.read_response().status == 200
    (received,) = upstream.received
    names = [name.lower() for name, _ in received.headers]
    assert not [n for n in names if "_" in n]
    assert received.header("x-kept") == "yes"
    assert received.header("x-forwarded-for") == "127.0.0.1"


def test_method_and_url_override_fields_never_reach_the_upstream(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-HTTP-Method-Override: DELETE\r\n"
            b"X-HTTP-Method: DELETE\r\nX-Method-Override: PUT\r\nX-Original-URL: /admin\r\n"
            b"X-Rewrite-URL: /admin\r\n\r\n"
        )
        assert conn.read_response().status == 200
    (received,) = upstream.received
    names = {name.lower() for name, _ in received.headers}
    assert not names & {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    }


def test_a_second_authorization_field_is_400(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\n"
            b"authorization: Basic dHdvOnR3bw==\r\n\r\n"
        )
        problem = check_raw_problem(conn.read_response(), 400, PROBLEMS + "bad-request")
    assert "authorization" in problem["detail"]
    assert upstream.count == 0


def test_connection_cannot_remove_what_a_policy_sets_or_what_frames_the_body(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["routes"][0]["policies"] = [
        {"type": "headers", "request": {"set": {"X-Backend-Secret": "from-portico"}}}
    ]
    gateway = start_gateway(config)
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Drop-Me: 1\r\n"
            b"Connection: x-backend-secret, content-length, host, x-drop-me, x-request-id\r\n"
            b"\r\nhello"
        )
        response = conn.read_response()
    assert response.status == 200
    (received,) = upstream.received
    assert received.header("x-backend-secret") == "from-portico"
    assert received.header("x-drop-me") is None
    assert received.header("x-request-id") is not None
    assert received.body_length == 5
    echo = response.json()
    assert echo["body"] == "hello" if "body" in echo else True


def test_the_absolute_form_authority_wins_and_is_what_the_upstream_and_log_see(
    upstream: Upstream, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = start_gateway(
        {
            "gateway": {"access_log": True},
            "services": {"main": service(upstream.url), "admin": service(upstream.url)},
            "routes": [
                route("admin", "/{rest:path}", "admin", hosts=["admin.local"], methods=["POST"]),
                route("public", "/{rest:path}", "main"),
            ],
        }
    )
    with caplog.at_level(logging.INFO, logger="portico.access"):
        with RawConnection(gateway.port) as conn:
            conn.send(b"GET http://public.example/a HTTP/1.1\r\nHost: public.example\r\n\r\n")
            assert conn.read_response().status == 200
            conn.send(b"GET http://admin.local/a?secret=1 HTTP/1.1\r\nHost: public.example\r\n\r\n")
            response = conn.read_response()
        assert response.status == 405  # the admin.local route, not the public one
        with RawConnection(gateway.port) as conn:
            conn.send(b"GET http://user:pw@public.example/a HTTP/1.1\r\nHost: x\r\n\r\n")
            check_raw_problem(conn.read_response(), 400, PROBLEMS + "bad-request")

        def access_lines() -> list[dict[str, object]]:
            records = [r for r in caplog.records if r.name == "portico.access"]
            return [
                {k: getattr(r, k) for k in ("method", "path", "status") if hasattr(r, k)}
                for r in records
            ]

        lines = wait_for(lambda: len(access_lines()) == 3 and access_lines())
    (received,) = upstream.received
    assert received.target == "/a"
    assert received.header("host") is not None
    assert [line["path"] for line in lines] == ["/a", "/a", "-"]
    assert "pw" not in caplog.text and "secret" not in caplog.text


def test_a_get_route_serves_head_with_its_own_policies(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {"main": service(upstream.url)},
            "routes": [
                route(
                    "guarded",
                    "/guarded",
                    methods=["GET"],
                    policies=[{"type": "ip-rules", "deny": ["127.0.0.0/8"]}],
                ),
                route("public", "/{rest:path}"),
            ],
        }
    )
    with RawConnection(gateway.port) as conn:
        conn.send(b"HEAD /guarded HTTP/1.1\r\nHost: a\r\n\r\n")
        assert conn.read_response(head_only=True).status == 403
        conn.send(b"DELETE /guarded HTTP/1.1\r\nHost: a\r\n\r\n")
        response = conn.read_response()
        assert response.status == 405
        assert response.header("allow") == "GET, HEAD"
    assert upstream.count == 0
