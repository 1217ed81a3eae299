"""HTTP/1.1 on the client side, byte for byte: keep-alive, pipelining, framing, HEAD, Expect."""

from __future__ import annotations

import zlib

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
from tests.support.upstreams import Upstream, pattern, pattern_crc32, refused_url

TOO_LARGE = "https://portico.dev/problems/request-too-large"
BAD_REQUEST = "https://portico.dev/problems/bad-request"


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: api.test\r\n%s\r\n" % (path.encode(), extra)


def test_keep_alive_connection_carries_several_requests(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        for i in range(5):
            conn.send(get(f"/item/{i}"))
            response = conn.read_response()
            assert response.status == 200
            assert response.json()["path"] == f"/item/{i}"
            assert (response.header("connection") or "").lower() != "close"
    assert upstream.paths() == [f"/item/{i}" for i in range(5)]


def test_pipelined_requests_are_answered_in_order(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        # The first is the slowest: answers must still come back in request order.
        conn.send(get("/slow?head=0.3") + get("/second") + get("/third"))
        first, second, third = (conn.read_response() for _ in range(3))
    assert first.json() == {"upstream": "main", "slow": True}
    assert second.json()["path"] == "/second"
    assert third.json()["path"] == "/third"


def test_pipelined_requests_with_bodies_are_answered_in_order(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    requests = b"".join(
        b"POST /n/%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body)
        for i, body in enumerate([b"alpha", b"", b"gamma" * 1000])
    )
    with RawConnection(gateway.port) as conn:
        conn.send(requests + get("/last"))
        responses = [conn.read_response() for _ in range(4)]
    assert [r.json()["path"] for r in responses] == ["/n/0", "/n/1", "/n/2", "/last"]
    assert [r.json()["body"] for r in responses] == ["alpha", "", "gamma" * 1000, ""]


def test_chunked_request_body_is_forwarded(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /upload-echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\n"
        )
        conn.send(b"6\r\nworld!\r\n0\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.json()["body"] == "hello world!"
        conn.send(get("/after"))
        assert conn.read_response().json()["path"] == "/after"


def test_chunked_upstream_response_is_reframed_for_the_client(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    size = 300_000
    with RawConnection(gateway.port, timeout=5) as conn:
        conn.send(get(f"/bytes/{size}?framing=chunked"))
        response = conn.read_response()
        assert len(response.body) == size
        assert zlib.crc32(response.body) == pattern_crc32(size)
        conn.send(get("/after"))
        assert conn.read_response().json()["path"] == "/after"


def test_close_delimited_upstream_response_is_chunked_for_a_keep_alive_client(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    size = 200_000
    with RawConnection(gateway.port) as conn:
        conn.send(get(f"/bytes/{size}?framing=close"))
        response = conn.read_response()
        assert response.status == 200
        assert "chunked" in (response.header("transfer-encoding") or "")
        assert zlib.crc32(response.body) == pattern_crc32(size)
        # Only the upstream connection ended with the body; the client's goes on.
        conn.send(get("/after"))
        assert conn.read_response().json()["path"] == "/after"


def test_http_1_0_client_gets_a_close_delimited_body(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    size = 100_000
    with RawConnection(gateway.port) as conn:
        conn.send(f"GET /bytes/{size}?framing=close HTTP/1.0\r\nHost: a\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 200
        assert response.header("transfer-encoding") is None
        assert zlib.crc32(response.body) == pattern_crc32(size)


def test_http_1_0_client_connection_closes_after_the_response(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /echo HTTP/1.0\r\nHost: a\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.json()["method"] == "GET"
        assert conn.is_closed()


def test_head_response_has_no_body_and_the_connection_stays_usable(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = conn.read_response(head_only=True)
        assert head.status == 200
        assert head.header("content-length") == "5000"
        conn.send(b"HEAD /bytes/7000?framing=chunked HTTP/1.1\r\nHost: a\r\n\r\n")
        assert conn.read_response(head_only=True).status == 200
        # Any body bytes after a HEAD response would be read as the next response's head.
        conn.send(get("/after"))
        after = conn.read_response()
        assert after.status == 200
        assert after.json()["path"] == "/after"
    assert [r.method for r in upstream.received] == ["HEAD", "HEAD", "GET"]


def test_head_on_a_missing_route_has_no_body(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {"services": {"main": service(upstream.url)}, "routes": [route("x", "/x")]}
    )
    with RawConnection(gateway.port) as conn:
        conn.send(b"HEAD /missing HTTP/1.1\r\nHost: a\r\n\r\n")
        head = conn.read_response(head_only=True)
        assert head.status == 404
        conn.send(get("/x"))
        assert conn.read_response().status == 200


def test_expect_100_continue_gets_an_interim_response_before_the_body(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
        )
        status, _ = conn.read_interim()
        assert status == 100
        conn.send(b"hello there")
        response = conn.read_response()
        assert response.status == 200
        echo = response.json()
        assert echo["body"] == "hello there"
        assert not [k for k, _ in echo["headers"] if k.lower() == "expect"]


def test_expect_100_continue_over_the_limit_is_refused_without_reading_the_body(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["routes"][0]["max_body_size"] = "1KiB"
    gateway = start_gateway(config)
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"PUT /doc HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        check_raw_problem(conn.read_response(), 413, TOO_LARGE)
    assert upstream.count == 0


def test_malformed_request_is_answered_400(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 tls hello\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n",
    ):
        with RawConnection(gateway.port) as conn:
            conn.send(garbage)
            check_raw_problem(conn.read_response(), 400, BAD_REQUEST)
            assert conn.is_closed()
    assert upstream.count == 0


def test_malformed_chunked_body_is_answered_400(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url, timeouts={"read": "20s"})
    gateway = start_gateway(config)
    with RawConnection(gateway.port, timeout=5) as conn:
        conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        wait_for(lambda: upstream.in_flight == 1, what="the request to reach the upstream")
        conn.send(b"3\r\nabc\r\nzz\r\n")
        check_raw_problem(conn.read_response(), 400, BAD_REQUEST)
        assert conn.is_closed()


def test_request_smuggling_with_two_lengths_is_refused(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
            b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        response = conn.read_response()
        assert response.status == 400
    assert "/smuggled" not in upstream.paths()


def test_body_over_the_limit_by_content_length_is_413(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["routes"][0]["max_body_size"] = "1KiB"
    gateway = start_gateway(config)
    with RawConnection(gateway.port) as conn:
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n" + b"x" * 1025)
        check_raw_problem(conn.read_response(), 413, TOO_LARGE)
    with RawConnection(gateway.port) as conn:
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024)
        assert conn.read_response().json()["body_length"] == 1024
    assert upstream.count == 1


def test_gateway_wide_body_limit_applies_without_a_route_limit(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["gateway"] = {"max_body_size": 2000}
    gateway = start_gateway(config)
    with RawConnection(gateway.port) as conn:
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2001\r\n\r\n")
        check_raw_problem(conn.read_response(), 413, TOO_LARGE)


def test_chunked_body_growing_past_the_limit_is_413(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["routes"][0]["max_body_size"] = "64KiB"
    gateway = start_gateway(config)
    block = next(pattern(16 * 1024))
    chunk = b"%x\r\n%s\r\n" % (len(block), block)
    with RawConnection(gateway.port) as conn:
        conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
        # The first chunk streams upstream; the limit is found only as the body grows.
        try:
            for _ in range(8):
                conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway may close as soon as it has answered
        check_raw_problem(conn.read_response(), 413, TOO_LARGE)
        assert conn.is_closed()
    # The upstream never got a complete request it could have acted on.
    assert all(r.body_length <= 64 * 1024 for r in upstream.received)


def test_pipelined_head_and_get_stay_in_sync(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(
            b"HEAD /bytes/3000 HTTP/1.1\r\nHost: a\r\n\r\n"
            + get("/bytes/10")
            + b"HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\n"
            + get("/last")
        )
        assert conn.read_response(head_only=True).header("content-length") == "3000"
        assert len(conn.read_response().body) == 10
        assert conn.read_response(head_only=True).status == 200
        assert conn.read_response().json()["path"] == "/last"


def test_no_body_statuses_from_upstream_keep_the_connection_in_sync(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        for status in (204, 304):
            conn.send(get(f"/status/{status}"))
            response = conn.read_response()
            assert response.status == status
            assert response.header("x-status") == str(status)
            assert response.header("transfer-encoding") is None
        conn.send(get("/after"))
        assert conn.read_response().json()["path"] == "/after"


def test_absolute_form_request_target_is_routed_by_its_path(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET http://api.test/abs/path?q=1 HTTP/1.1\r\nHost: api.test\r\n\r\n")
        echo = conn.read_response().json()
    assert echo["target"] == "/abs/path?q=1"


def test_idle_client_connection_is_closed_after_keepalive_timeout(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url)
    config["gateway"] = {"keepalive_timeout": "0.5s"}
    gateway = start_gateway(config)
    with RawConnection(gateway.port) as conn:
        conn.send(get("/x"))
        assert conn.read_response().status == 200
        assert conn.is_closed(timeout=15)


def test_client_leaving_mid_request_does_not_disturb_later_requests(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    for _ in range(3):
        conn = RawConnection(gateway.port)
        conn.send(get("/hold"))
        wait_for(lambda: upstream.in_flight >= 1, what="the request to reach the upstream")
        conn.close()
        wait_for(lambda: upstream.in_flight == 0, what="the gateway to drop the exchange")
    upstream.release_held()
    with RawConnection(gateway.port) as conn:
        for _ in range(3):
            conn.send(get("/echo"))
            assert conn.read_response().status == 200


def test_pipelined_request_after_a_failed_one_is_still_served(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(
        {
            "services": {
                "main": service(upstream.url),
                "dead": service(refused_url(), retries=0, circuit_breaker=None),
            },
            "routes": [route("dead", "/dead", "dead"), route("all", "/{rest:path}")],
        }
    )
    with RawConnection(gateway.port) as conn:
        conn.send(get("/dead") + get("/alive"))
        assert conn.read_response().status == 502
        assert conn.read_response().json()["path"] == "/alive"


@pytest.mark.parametrize(
    "hosts", [b"", b"Host: a.test\r\nHost: b.test\r\n"], ids=["missing", "twice"]
)
def test_request_without_exactly_one_host_is_400(
    hosts: bytes, upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /x HTTP/1.1\r\n" + hosts + b"\r\n")
        check_raw_problem(conn.read_response(), 400, BAD_REQUEST)
    assert upstream.count == 0


def test_request_target_over_64_kib_is_414(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /" + b"u" * 70_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        check_raw_problem(conn.read_response(), 414, "https://portico.dev/problems/uri-too-long")
    assert upstream.count == 0


def test_refused_upgrade_leaves_the_connection_usable_or_closed(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port, timeout=5) as conn:
        conn.send(
            b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        response = conn.read_response()
        assert response.status == 200
        assert response.json()["path"] == "/plain"
        try:
            conn.send(get("/next"))
            following = conn.read_response()
        except (ConnectionError, OSError) as exc:
            assert not isinstance(exc, TimeoutError), "the connection hangs"
        else:
            assert following.json()["path"] == "/next"


def test_invalid_upstream_response_is_502(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0))
    with RawConnection(gateway.port) as conn:
        conn.send(get("/garbage"))
        check_raw_problem(
            conn.read_response(),
            502,
            "https://portico.dev/problems/upstream-unavailable",
            secrets=(str(upstream.port),),
        )


def test_client_connection_close_is_honoured(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() == "close"
        assert conn.is_closed()


def test_upstream_connection_announced_as_closing_is_not_reused(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(get("/headers?set=Connection:%20close"))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") is None, "the upstream's hop-by-hop field"
        conn.send(get("/x"))
        assert conn.read_response().status == 200
    assert upstream.accepted == 2


def test_a_fragment_in_the_request_target_does_not_go_upstream(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with RawConnection(gateway.port) as conn:
        conn.send(get("/path?q=1#section"))
        echo = conn.read_response().json()
        conn.send(get("/other#only-a-fragment"))
        other = conn.read_response().json()
    assert echo["target"] == "/path?q=1"
    assert other["target"] == "/other"


def test_options_asterisk_is_answered_by_portico(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    before = upstream.count
    with RawConnection(gateway.port) as conn:
        conn.send(b"OPTIONS * HTTP/1.1\r\nHost: api.test\r\n\r\n")
        response = conn.read_response()
        conn.send(b"GET * HTTP/1.1\r\nHost: api.test\r\n\r\n")
        refused = conn.read_response()
    assert response.status == 200
    assert response.header("allow") == "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    assert response.body == b""
    check_raw_problem(refused, 400, BAD_REQUEST)
    assert upstream.count == before
