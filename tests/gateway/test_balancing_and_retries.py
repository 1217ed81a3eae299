"""Choosing targets, retrying when it is safe, and the errors when upstreams fail."""

from __future__ import annotations

import threading
import zlib
from collections import Counter

import httpx
import pytest
from tests.gateway.conftest import MakeUpstream, StartGateway
from tests.support.gateway import (
    RawConnection,
    check_problem,
    check_raw_problem,
    proxy_config,
    wait_for,
)
from tests.support.upstreams import Blackhole, Upstream, refused_url

BASE = "https://portico.dev/problems/"


def spread(http: httpx.Client, n: int, path: str = "/who") -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(n):
        response = http.get(path)
        assert response.status_code == 200, response.text
        counts[response.json()["upstream"]] += 1
    return counts


def test_round_robin_spreads_evenly(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b, c = make_upstream("a"), make_upstream("b"), make_upstream("c")
    gateway = start_gateway(proxy_config(a.url, b.url, c.url))
    with gateway.client() as http:
        assert spread(http, 30) == {"a": 10, "b": 10, "c": 10}


def test_round_robin_respects_weights_without_bursts(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(proxy_config({"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}))
    with gateway.client() as http:
        order = [http.get("/who").json()["upstream"] for _ in range(40)]
    assert Counter(order) == {"a": 30, "b": 10}
    # Smooth weighting: b gets one request in every window of four, never two in a row.
    for start in range(0, 40, 4):
        assert order[start : start + 4].count("b") == 1, order


def test_least_connections_prefers_the_idle_target(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(proxy_config(a.url, b.url, balancer="least_connections"))
    slow_result: list[httpx.Response] = []

    def slow_request() -> None:
        with gateway.client() as http:
            slow_result.append(http.get("/slow?head=1.5"))

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        busy = wait_for(
            lambda: next((u for u in (a, b) if u.in_flight == 1), None),
            what="the slow request to reach a target",
        )
        idle = b if busy is a else a
        with gateway.client() as http:
            assert spread(http, 6) == {idle.name: 6}
    finally:
        thread.join(timeout=30)
    assert slow_result[0].status_code == 200


def test_get_to_a_refused_target_is_retried_on_a_live_one(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(refused_url(), upstream.url, retries=1))
    with gateway.client() as http:
        for _ in range(6):
            response = http.get("/who")
            assert response.status_code == 200
            assert response.json()["upstream"] == "main"
    assert upstream.count == 6


def test_get_failing_mid_request_is_retried_on_another_target(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    dropping, live = make_upstream("dropping"), make_upstream("live")
    dropping.mode = "drop"
    gateway = start_gateway(proxy_config(dropping.url, live.url, retries=1, circuit_breaker=None))
    with gateway.client() as http:
        for _ in range(4):
            response = http.get("/who")
            assert response.status_code == 200
            assert response.json()["upstream"] == "live"
    assert dropping.count >= 1, "the dropping target was tried"
    assert live.count == 4


def test_post_with_a_body_is_not_retried_after_a_failure_mid_request(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    dropping, live = make_upstream("dropping"), make_upstream("live")
    dropping.mode = "drop"
    # The first pick of a fresh round robin is the first target: the dropping one.
    gateway = start_gateway(proxy_config(dropping.url, live.url, retries=3, circuit_breaker=None))
    with gateway.client() as http:
        response = http.post("/orders", content=b'{"amount": 100}')
    check_problem(
        response, 502, BASE + "upstream-unavailable", secrets=(str(dropping.port), str(live.port))
    )
    assert dropping.count == 1
    assert live.count == 0, "a POST that reached an upstream must not be replayed"


def test_post_with_a_body_is_retried_when_the_connection_is_refused(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(refused_url(), upstream.url, retries=1))
    body = b"x" * 100_000
    with gateway.client() as http:
        response = http.post("/orders", content=body)
    assert response.status_code == 200
    assert response.json()["body_length"] == len(body)
    assert response.json()["body"] == body.decode()


def test_retries_stop_after_the_configured_number(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    targets = [make_upstream(f"d{i}") for i in range(4)]
    for target in targets:
        target.mode = "drop"
    gateway = start_gateway(
        proxy_config(*(t.url for t in targets), retries=2, circuit_breaker=None)
    )
    with gateway.client() as http:
        check_problem(http.get("/who"), 502, BASE + "upstream-unavailable")
    assert sorted(t.count for t in targets) == [0, 1, 1, 1]


def test_read_timeout_is_504(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0, timeouts={"read": "0.3s"}))
    with gateway.client() as http:
        response = http.get("/slow?head=10")
    check_problem(response, 504, BASE + "upstream-timeout", secrets=(str(upstream.port),))


def test_read_timeout_between_body_reads_cuts_the_response(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0, timeouts={"read": "0.3s"}))
    with gateway.client() as http, pytest.raises(httpx.RemoteProtocolError):
        http.get("/slow?body=10")


def test_connect_timeout_is_504(start_gateway: StartGateway) -> None:
    blackhole = Blackhole()
    try:
        gateway = start_gateway(
            proxy_config(blackhole.url, retries=0, timeouts={"connect": "0.3s"})
        )
        with gateway.client() as http:
            response = http.get("/who")
        check_problem(response, 504, BASE + "upstream-timeout", secrets=(str(blackhole.port),))
    finally:
        blackhole.close()


def test_connection_refused_is_502(start_gateway: StartGateway) -> None:
    dead = refused_url()
    gateway = start_gateway(proxy_config(dead, retries=0))
    with gateway.client() as http:
        response = http.get("/who")
    check_problem(
        response, 502, BASE + "upstream-unavailable", secrets=(dead.rsplit(":", 1)[1], "127.0.0.1")
    )


def test_upstream_closing_before_answering_is_502(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    upstream.mode = "drop"
    gateway = start_gateway(proxy_config(upstream.url, retries=0))
    with gateway.client() as http:
        check_problem(http.get("/who"), 502, BASE + "upstream-unavailable")


def test_upstream_dying_mid_body_cuts_the_client_connection(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.get("/drop?after=5000")
        # The failed exchange was not replayed (the head was already out) ...
        assert upstream.paths() == ["/drop"]
        # ... and the gateway still serves.
        assert http.get("/who").status_code == 200


def test_upstream_keep_alive_connections_are_reused(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url))
    with gateway.client() as http:
        for _ in range(5):
            assert http.get("/who").status_code == 200
    assert upstream.count == 5
    assert upstream.accepted == 1


def test_upstream_connections_are_not_kept_with_max_idle_zero(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url, keepalive={"max_idle": 0}))
    with gateway.client() as http:
        for _ in range(3):
            assert http.get("/who").status_code == 200
    assert upstream.accepted == 3


def test_large_post_is_replayed_whole_after_connection_refused(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    """More than the gateway's body buffer arrives before a target accepts the connection."""
    gateway = start_gateway(proxy_config(refused_url(), upstream.url, retries=1))
    body = bytes(range(256)) * 8192  # 2 MiB
    with gateway.client() as http:
        response = http.post("/upload", content=body)
    assert response.status_code == 200
    assert response.json() == {"length": len(body), "crc32": zlib.crc32(body)}


def test_upstream_not_reading_the_body_is_a_write_timeout(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = proxy_config(upstream.url, retries=0, timeouts={"write": "0.5s"})
    config["routes"][0]["max_body_size"] = "1GiB"
    gateway = start_gateway(config)
    size = 256 * 1024 * 1024
    with RawConnection(gateway.port, timeout=20) as conn:
        conn.send(b"POST /no-read HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        # Write until the gateway stops taking more (its reading is paused by flow control).
        conn.sock.settimeout(2.0)
        block = b"w" * 65536
        sent = 0
        try:
            while sent < size:
                sent += conn.sock.send(block)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            pass
        conn.sock.settimeout(20)
        response = conn.read_response()
    assert sent < size, "flow control held the client back"
    check_raw_problem(response, 504, BASE + "upstream-timeout", secrets=(str(upstream.port),))


def test_idle_upstream_connections_expire(upstream: Upstream, start_gateway: StartGateway) -> None:
    gateway = start_gateway(proxy_config(upstream.url, keepalive={"idle_timeout": "0.3s"}))
    with gateway.client() as http:
        assert http.get("/who").status_code == 200
        assert upstream.accepted == 1
        # The pool sweeps once a second: the idle connection is closed, not reused.
        wait_for(lambda: upstream.open_connections == 0, what="the idle connection to close")
        assert http.get("/who").status_code == 200
    assert upstream.accepted == 2


def test_slow_reading_client_is_not_mistaken_for_an_upstream_read_timeout(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(proxy_config(upstream.url, retries=0, timeouts={"read": "0.3s"}))
    size = 64 * 1024 * 1024
    received = 0
    with gateway.client() as http, http.stream("GET", f"/bytes/{size}") as response:
        chunks = response.iter_raw(64 * 1024)
        received += len(next(chunks))
        # The client stops reading for longer than the read timeout; flow control stops the
        # upstream, which is not the upstream's fault.
        threading.Event().wait(1.5)
        for data in chunks:
            received += len(data)
    assert received == size
