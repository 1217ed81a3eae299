"""With a ``redis`` section, signature nonces are shared: a signed request accepted by one
``portico serve`` process is a replay for another process on the same Redis, and a Redis that
does not answer refuses signatures (fail closed) instead of reopening the window for replays."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.gateway import PorticoProcess, check_problem
from tests.support.redis import RedisServer, redis_for_session
from tests.support.signing import Signer, consumer_config
from tests.support.upstreams import Upstream

INVALID_CREDENTIALS = "https://portico.dev/problems/invalid-credentials"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("signed")
    yield server
    server.close()


def signed_config(upstream: Upstream, signer: Signer, redis_url: str) -> dict[str, object]:
    return {
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            {
                "name": "orders",
                "match": {"path": "/orders/{rest:path}"},
                "service": "main",
                "policies": [{"type": "auth", "methods": ["signature"]}],
            }
        ],
        "tenants": consumer_config(signer),
        "redis": {"url": redis_url, "timeout": "300ms"},
    }


def test_a_replay_to_another_process_is_refused(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    """A signed request accepted by one process is refused by another process on the same
    address (the first stopped, so ``@authority`` is the same and the second process's memory
    is new): the nonce was remembered in Redis. A fresh signature of the same request is
    accepted, so what was refused is the nonce."""
    signer = Signer.generate("ed25519")
    config = signed_config(upstream, signer, redis_server.url)
    config["gateway"] = {"listen": {"host": "127.0.0.1", "port": _free_port()}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = PorticoProcess(tmp_path / "a", config)
    try:
        with first.client() as one:
            request = signer.sign(one.build_request("GET", "/orders/42"))
            assert one.send(request).status_code == 200
    finally:
        first.stop()
    second = PorticoProcess(tmp_path / "b", config)
    try:
        with second.client() as two:
            check_problem(two.send(request), 401, INVALID_CREDENTIALS)
            fresh = signer.sign(two.build_request("GET", "/orders/42"))
            assert two.send(fresh).status_code == 200
    finally:
        second.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_signatures_are_refused_while_redis_is_away(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer
) -> None:
    signer = Signer.generate("ed25519")
    process = PorticoProcess(tmp_path, signed_config(upstream, signer, redis_server.url))
    try:
        with process.client() as http:
            redis_server.stop()
            try:
                refused = http.send(signer.sign(http.build_request("GET", "/orders/1")))
            finally:
                redis_server.start()
            check_problem(refused, 401, INVALID_CREDENTIALS)
            assert "shared nonce store did not answer" in process.log()
            accepted = http.send(signer.sign(http.build_request("GET", "/orders/2")))
            assert accepted.status_code == 200
    finally:
        process.stop()
