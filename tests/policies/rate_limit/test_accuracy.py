"""Accuracy across processes: 2 and 4 ``portico serve`` processes share one real Redis, many
concurrent clients hammer one limit of L per window, and every full window admits L within 1%.

Asking Redis for every request (``lease: off``), the clients' count of admitted requests equals
the counters' to the unit (nothing admitted uncounted, nothing counted unadmitted). With leases
(``lease: auto``, the default) a permit is counted when Redis grants it to a process: the clients
are never admitted more than the counters say, and what was counted but not used (a lease still
held when a window ended) stays within 1% of the limit per window."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.support.gateway import PorticoProcess, route
from tests.support.redis import RedisServer, redis_for_session
from tests.support.upstreams import Upstream

LIMIT = 100
RUN_SECONDS = 7.0
"""Three windows of 2 s: at least two of them whole, whatever the phase."""
CLIENTS_PER_GATEWAY = 6
KEY = "portico:rl:accuracy:2s:r=accuracy"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream("accuracy")
    yield server
    server.close()


def config(upstream: Upstream, redis_url: str, lease: str) -> dict[str, Any]:
    limits = [{"name": "accuracy", "limit": LIMIT, "window": "2s", "by": ["route"]}]
    warm = [{"name": "warm", "limit": 1000, "window": "1s", "by": ["route"]}]
    return {
        "redis": {"url": redis_url, "timeout": "2s"},
        "operations": {"enabled": False},
        "services": {"main": {"targets": [upstream.url], "retries": 0}},
        "routes": [
            # The script is loaded into Redis and the connections made before the count starts.
            route("warm", "/warm", policies=[{"type": "rate-limit", "limits": warm}]),
            route(
                "accuracy",
                "/{rest:path}",
                policies=[{"type": "rate-limit", "limits": limits, "lease": lease}],
            ),
        ],
    }


class Gateway(PorticoProcess):
    # Four processes importing Portico at once on a busy two-core machine can take a while.
    STARTUP_TIMEOUT = 180.0


class WindowWatch:
    """Reads the counter as it moves: the first write of a window stores the previous window's
    final count, so every full window's count is seen, exactly."""

    def __init__(self, redis_server: RedisServer) -> None:
        self.finals: dict[int, int] = {}
        self.last: tuple[int, int] = (0, 0)
        self._client = redis_server.client()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.read()
            time.sleep(0.01)

    def read(self) -> None:
        raw = self._client.get(KEY)
        if raw is None:
            return
        index, current, previous = (int(p) for p in raw.split())
        self.finals[index - 1] = previous
        self.last = (index, current)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.read()
        self._client.close()


async def hammer(ports: list[int], seconds: float) -> dict[int, int]:
    """Keep-alive connections sending GET after GET until ``seconds`` have passed; the counts
    of each status. A bare HTTP/1.1 client: an httpx request costs more CPU than the gateway's
    own work, and the clients must outrun the limit on a busy machine."""
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    request = b"GET /x HTTP/1.1\r\nHost: accuracy\r\n\r\n"

    async def client_loop(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client_loop(port) for port in ports for _ in range(CLIENTS_PER_GATEWAY)))
    return statuses


@pytest.mark.parametrize(("processes", "lease"), [(2, "auto"), (4, "auto"), (2, "off")])
def test_processes_sharing_redis_admit_the_limit_within_one_percent_per_window(
    redis_server: RedisServer, upstream: Upstream, tmp_path: Path, processes: int, lease: str
) -> None:
    redis_server.flush()
    gateways: list[Gateway] = []
    try:
        directories = [tmp_path / f"gateway-{i}" for i in range(processes)]
        for directory in directories:
            directory.mkdir()
        with ThreadPoolExecutor(processes) as pool:
            starting = [
                pool.submit(Gateway, d, config(upstream, redis_server.url, lease))
                for d in directories
            ]
            gateways.extend(f.result() for f in starting)
        for gateway in gateways:
            with gateway.client() as client:
                for _ in range(CLIENTS_PER_GATEWAY):
                    assert client.get("/warm").status_code == 200
        watch = WindowWatch(redis_server)
        statuses = asyncio.run(hammer([g.port for g in gateways], RUN_SECONDS))
        watch.stop()
    finally:
        for gateway in gateways:
            gateway.stop()
    assert set(statuses) <= {200, 429}, statuses
    last_index, last_count = watch.last
    counts = {**watch.finals, last_index: last_count}
    counts = {index: count for index, count in counts.items() if count}
    first = min(counts)
    # Every admitted request is in exactly one window's count, across all the processes; with
    # leases, a permit granted and not used before its window ended is counted too.
    unused = sum(counts.values()) - statuses[200]
    if lease == "off":
        assert unused == 0, (statuses, counts)
    else:
        assert 0 <= unused <= len(counts) * LIMIT // 100, (statuses, counts)
    full = [counts.get(index, 0) for index in range(first + 1, last_index)]
    assert len(full) >= 2, (statuses, counts)
    for count in full:
        assert abs(count - LIMIT) <= LIMIT / 100, (statuses, counts)
    assert all(count <= LIMIT for count in counts.values())
    assert statuses[429] > statuses[200]  # the clients did ask for more than the limit
