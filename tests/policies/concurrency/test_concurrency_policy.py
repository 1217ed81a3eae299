"""The ``concurrency`` policy through a real gateway and a real upstream that holds requests: at
most ``max`` in progress to the service across its routes, a bounded first-in-first-out queue,
503 ``concurrency-limit-exceeded`` beyond it or after ``queue_timeout``, places given back when
a client leaves (queued or in progress), and kept across a config reload."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.gateway import (
    RawConnection,
    RunningGateway,
    check_problem,
    route,
    running_gateway,
    wait_for,
)
from tests.support.upstreams import Upstream

LIMIT_EXCEEDED = "https://portico.dev/problems/concurrency-limit-exceeded"


def config(upstream: Upstream, **settings: Any) -> dict[str, Any]:
    entry = {"type": "concurrency", "max": 2, "queue": 1, "queue_timeout": "5s", **settings}
    return {
        "services": {
            "held": {
                "targets": [upstream.url],
                "retries": 0,
                "timeouts": {"read": "30s"},
                "policies": [entry],
            }
        },
        "routes": [
            route("one", "/one/{rest:path}", service="held", strip_prefix="/one"),
            route("two", "/two/{rest:path}", service="held", strip_prefix="/two"),
        ],
    }


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("held")
    yield server
    server.release_held()
    server.close()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def send(gateway: RunningGateway, path: str) -> httpx.Response:
    with gateway.client() as client:
        return client.get(path)


def test_requests_beyond_max_and_the_queue_get_503_at_once(
    upstream: Upstream, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        held = [pool.submit(send, gateway, p) for p in ("/one/hold", "/two/hold")]
        wait_for(lambda: upstream.in_flight == 2, what="two requests held upstream")
        queued = pool.submit(send, gateway, "/one/echo")
        wait_for(lambda: _gauge(gateway) == 2 and _queued(gateway) == 1, what="one queued")
        refused = send(gateway, "/two/echo")  # max 2 for the service, both routes together
        check_problem(refused, 503, LIMIT_EXCEEDED)
        assert refused.headers["retry-after"] == "1"
        assert upstream.max_in_flight == 2
        upstream.release_held()
        assert [f.result(timeout=10).status_code for f in held] == [200, 200]
        assert queued.result(timeout=10).status_code == 200  # the queue got the freed place
        wait_for(lambda: _gauge(gateway) == 0, what="every place given back")
        rejected = gateway.gateway.stats.counters["portico_concurrency_rejected"]
        assert rejected.values == {("held", "", "queue_full"): 1}


def test_a_queued_request_gets_503_after_the_queue_timeout(
    upstream: Upstream, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    with running_gateway(tmp_path, config(upstream, queue_timeout="200ms")) as gateway:
        held = [pool.submit(send, gateway, "/one/hold") for _ in range(2)]
        wait_for(lambda: upstream.in_flight == 2, what="two requests held upstream")
        check_problem(send(gateway, "/one/echo"), 503, LIMIT_EXCEEDED)
        assert upstream.count == 2  # the refused one never reached the upstream
        upstream.release_held()
        for future in held:
            future.result(timeout=10)
        rejected = gateway.gateway.stats.counters["portico_concurrency_rejected"]
        assert rejected.values == {("held", "", "timeout"): 1}


def test_clients_that_leave_give_their_places_back(
    upstream: Upstream, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    with running_gateway(tmp_path, config(upstream)) as gateway:
        # Two clients hold both places, a third waits in the queue; all three leave.
        connections = [RawConnection(gateway.port) for _ in range(3)]
        for conn in connections[:2]:
            conn.send(b"GET /one/hold HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: upstream.in_flight == 2, what="two requests held upstream")
        connections[2].send(b"GET /one/echo HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: _queued(gateway) == 1, what="one queued")
        for conn in connections:
            conn.close()
        wait_for(lambda: _gauge(gateway) == 0 and _queued(gateway) == 0, what="places back")
        upstream.release_held()
        results = [pool.submit(send, gateway, "/one/echo") for _ in range(2)]
        assert [f.result(timeout=10).status_code for f in results] == [200, 200]


def test_places_taken_before_a_reload_are_still_counted_after_it(
    upstream: Upstream, tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    from portico.assembly import build_runtime, load_config
    from portico.identity.context import Extensions
    from portico.shared.memory import MemoryState

    shared = MemoryState()  # the process's long-lived state, as `portico serve` holds it
    with running_gateway(tmp_path, config(upstream, queue=0), shared=shared) as gateway:
        held = [pool.submit(send, gateway, "/one/hold") for _ in range(2)]
        wait_for(lambda: upstream.in_flight == 2, what="two requests held upstream")
        extensions = Extensions(stats=gateway.gateway.stats, shared=shared)
        runtime = gateway.gateway.runtime
        # A new snapshot, with new policy objects.
        rebuilt = build_runtime(load_config(gateway.config_path), runtime, extensions)
        gateway.call(lambda: gateway.gateway.apply(rebuilt))
        assert gateway.gateway.runtime is rebuilt
        check_problem(send(gateway, "/two/echo"), 503, LIMIT_EXCEEDED)
        upstream.release_held()
        for future in held:
            future.result(timeout=10)
        assert send(gateway, "/two/echo").status_code == 200


def _gauge(gateway: RunningGateway) -> int:
    gauge = gateway.gateway.stats.gauges.get("portico_concurrency_in_flight")
    return gauge.values.get(("held", ""), 0) if gauge is not None else 0


def _queued(gateway: RunningGateway) -> int:
    policy = gateway.gateway.runtime.router._matchers[0].target.pipeline[0]
    queued: int = policy._limiter.queued()
    return queued
