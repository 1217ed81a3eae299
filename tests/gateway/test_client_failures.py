"""Failures caused by the client never count against a target, and the client is told (408/400).

An anonymous client that stalls, trickles or breaks its request body must not be able to open a
service's circuit breaker or take a target out of rotation; a slow but steady upload completes
even when it takes longer than the upstream's read timeout (the read timeout starts when the
whole request has been sent, as in nginx).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
from tests.gateway.conftest import MakeUpstream, StartGateway
from tests.support.gateway import RawConnection, check_raw_problem, proxy_config, wait_for
from tests.support.oauth import KeyPair, ed25519_key, free_port, oauth_config, serving_gateway
from tests.support.upstreams import Upstream

PROBLEMS = "https://portico.dev/problems/"


def fragile_service_config(*urls: str) -> dict[str, object]:
    """Breakers and passive checks that trip after two failures, and short timeouts."""
    config = proxy_config(
        *urls,
        retries=0,
        timeouts={"read": "1s", "write": "5s"},
        circuit_breaker={"failure_threshold": 2, "reset_timeout": "60s"},
        health_check={"passive": {"unhealthy_threshold": 2, "recovery_after": "60s"}},
    )
    config["gateway"] = {"body_timeout": "1s"}
    return config


def stalled_upload(port: int) -> tuple[int, bytes]:
    """A POST that announces 1,000 bytes, sends 10 and stalls: (status, body)."""
    with RawConnection(port, timeout=20) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        response = conn.read_response()
        closed = conn.is_closed(timeout=3)
    assert closed, "a connection whose body was abandoned cannot be reused"
    return response.status, response.body


def test_stalled_uploads_get_408_and_never_open_the_breaker(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(fragile_service_config(a.url, b.url))
    results: list[tuple[int, bytes]] = []
    threads = [
        threading.Thread(target=lambda: results.append(stalled_upload(gateway.port)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 6
    assert [status for status, _ in results] == [408] * 6
    # Both targets are still in rotation: a normal request on each gets through.
    with gateway.client() as http:
        for _ in range(4):
            assert http.get("/after").status_code == 200
    assert {r.path for r in a.received} >= {"/after"}
    assert {r.path for r in b.received} >= {"/after"}


def test_a_stalled_upload_is_answered_408_as_a_problem(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(fragile_service_config(upstream.url))
    with RawConnection(gateway.port, timeout=20) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        check_raw_problem(conn.read_response(), 408, PROBLEMS + "request-timeout")


def test_a_slow_steady_upload_outlasting_the_read_timeout_completes(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = fragile_service_config(upstream.url)
    config["gateway"] = {"body_timeout": "2s"}
    gateway = start_gateway(config)
    pieces = 16
    piece = b"p" * 512
    with RawConnection(gateway.port, timeout=30) as conn:
        conn.send(
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
            % (pieces * len(piece))
        )
        started = time.monotonic()
        for _ in range(pieces):
            conn.send(piece)
            time.sleep(0.2)  # 3.2 s in all, over three times the 1 s read timeout
        response = conn.read_response()
    assert time.monotonic() - started > 3.0
    assert response.status == 200, response
    assert response.json()["length"] == pieces * len(piece)


def test_a_slow_chunked_upload_completes_and_a_stalled_one_is_408(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    config = fragile_service_config(upstream.url)
    config["gateway"] = {"body_timeout": "2s"}
    gateway = start_gateway(config)
    with RawConnection(gateway.port, timeout=30) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(12):
            conn.send(b"100\r\n" + b"c" * 256 + b"\r\n")
            time.sleep(0.25)
        conn.send(b"0\r\n\r\n")
        response = conn.read_response()
    assert response.status == 200, response
    assert response.json()["length"] == 12 * 256
    with RawConnection(gateway.port, timeout=30) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        conn.send(b"100\r\n" + b"c" * 256 + b"\r\n")
        check_raw_problem(conn.read_response(), 408, PROBLEMS + "request-timeout")


def test_a_malformed_chunked_body_is_400_at_once_and_never_blames_the_target(
    make_upstream: MakeUpstream, start_gateway: StartGateway
) -> None:
    a, b = make_upstream("a"), make_upstream("b")
    gateway = start_gateway(fragile_service_config(a.url, b.url))
    head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    for split in (False, True):
        for _ in range(3):
            # 400, not the 504 that the upstream's 1 s read timeout would give if Portico waited
            # for the rest of the body.
            with RawConnection(gateway.port, timeout=20) as conn:
                if split:
                    # The head first (the request is on its way upstream), the broken chunk next.
                    conn.send(head + b"5\r\nhello\r\n")
                    time.sleep(0.2)
                    conn.send(b"zz\r\nworld\r\n0\r\n\r\n")
                else:
                    conn.send(head + b"zz\r\nhello\r\n0\r\n\r\n")
                check_raw_problem(conn.read_response(), 400, PROBLEMS + "bad-request")
                assert conn.is_closed(timeout=3)
    with gateway.client() as http:
        for _ in range(4):
            assert http.get("/after").status_code == 200


def test_a_body_held_open_to_a_builtin_endpoint_is_408(tmp_path: Path, upstream: Upstream) -> None:
    warehouse: KeyPair = ed25519_key()
    config = oauth_config(free_port(), upstream, warehouse)
    config["gateway"]["body_timeout"] = "1s"  # type: ignore[index]
    with serving_gateway(tmp_path, config) as gateway:
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=15)
        with sock:
            sock.sendall(
                b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 200\r\n\r\ngrant_type=client_cre"
            )
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, "closed without an answer"
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 "), data
            sock.settimeout(3)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break  # closed by Portico


def test_upstream_read_timeout_still_applies_once_the_body_is_sent(
    upstream: Upstream, start_gateway: StartGateway
) -> None:
    gateway = start_gateway(fragile_service_config(upstream.url))
    with gateway.client() as http:
        response = http.post("/slow?head=5", content=b"x" * 100)
    assert response.status_code == 504  # the upstream answers after 5 s; the timeout is 1 s
    with httpx.Client(base_url=gateway.url, trust_env=False, timeout=10) as http:
        wait_for(lambda: http.get("/ok").status_code == 200, what="the target to answer again")


def test_a_client_waiting_for_100_continue_is_told_to_send_to_a_builtin_endpoint(
    tmp_path: Path, upstream: Upstream
) -> None:
    config = oauth_config(free_port(), upstream, ed25519_key())
    with serving_gateway(tmp_path, config) as gateway, RawConnection(gateway.port) as conn:
        form = b"grant_type=client_credentials&client_id=nobody&client_secret=wrong"
        conn.send(
            b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n" % len(form)
        )
        status, _ = conn.read_interim()
        assert status == 100
        conn.send(form)
        response = conn.read_response()
    assert response.status == 401
    assert response.json()["error"] == "invalid_client"
