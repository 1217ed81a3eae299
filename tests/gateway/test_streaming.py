"""Bodies stream through the gateway in flat memory: 1 GiB each way through ``portico serve``.

The gateway runs as its own process so its resident memory can be sampled from
``/proc/<pid>/status`` while the transfer runs. The data is generated and checked on the fly on
both ends; nothing holds a whole body.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest
from tests.support.gateway import PorticoProcess, proxy_config, rss_kib
from tests.support.upstreams import Upstream, pattern, pattern_crc32

GIB = 1024**3
MEMORY_BOUND_KIB = 150 * 1024


class RssSampler:
    """Samples a process's resident memory in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.baseline = rss_kib(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1

    @property
    def growth_kib(self) -> int:
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def portico(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PorticoProcess]:
    """One gateway process for the module: starting one costs more than these tests."""
    upstream = Upstream("big")
    config = proxy_config(upstream.url, timeouts={"read": "30s", "write": "30s"})
    config["routes"][0]["max_body_size"] = "2GiB"
    process = PorticoProcess(tmp_path_factory.mktemp("streaming"), config)
    yield process
    process.stop()
    upstream.close()


def warm_up(portico: PorticoProcess) -> None:
    """A few small exchanges first, so the baseline includes the steady-state allocations."""
    with portico.client() as http:
        for _ in range(3):
            assert http.get("/bytes/1000000").status_code == 200
            assert http.post("/upload", content=b"x" * 1_000_000).status_code == 200


@pytest.mark.slow
def test_one_gib_download_streams_in_flat_memory(portico: PorticoProcess) -> None:
    warm_up(portico)
    received = 0
    crc = 0
    with (
        RssSampler(portico.pid) as rss,
        portico.client(timeout=60) as http,
        http.stream("GET", f"/bytes/{GIB}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-length"] == str(GIB)
        for data in response.iter_raw(1024 * 1024):
            received += len(data)
            crc = zlib.crc32(data, crc)
    assert received == GIB
    assert crc == pattern_crc32(GIB)
    assert rss.samples > 0
    assert rss.growth_kib < MEMORY_BOUND_KIB, f"gateway RSS grew by {rss.growth_kib} KiB"


@pytest.mark.slow
def test_one_gib_upload_streams_in_flat_memory(portico: PorticoProcess) -> None:
    warm_up(portico)
    with RssSampler(portico.pid) as rss, portico.client(timeout=60) as http:
        # A generator body: httpx sends it chunked, a block at a time.
        response = http.post("/upload", content=pattern(GIB))
    assert response.status_code == 200, response.text
    assert response.json() == {"length": GIB, "crc32": pattern_crc32(GIB)}
    assert rss.samples > 0
    assert rss.growth_kib < MEMORY_BOUND_KIB, f"gateway RSS grew by {rss.growth_kib} KiB"


def test_download_to_a_slow_reader_does_not_buffer_in_the_gateway(
    portico: PorticoProcess,
) -> None:
    """Flow control: a client that reads slowly holds the upstream back, not the gateway's RAM."""
    warm_up(portico)
    size = 256 * 1024 * 1024
    received = 0
    with (
        RssSampler(portico.pid) as rss,
        portico.client(timeout=60) as http,
        http.stream("GET", f"/bytes/{size}") as response,
    ):
        chunks = response.iter_raw(64 * 1024)
        # Read a little, stall (the upstream keeps writing), then read the rest.
        for _ in range(4):
            received += len(next(chunks))
        time.sleep(1.0)
        for data in chunks:
            received += len(data)
    assert received == size
    assert rss.growth_kib < MEMORY_BOUND_KIB, f"gateway RSS grew by {rss.growth_kib} KiB"


def test_upload_with_content_length_streams(portico: PorticoProcess) -> None:
    size = 64 * 1024 * 1024

    def body() -> Iterator[bytes]:
        yield from pattern(size)

    with portico.client(timeout=60) as http:
        response = http.post("/upload", content=body(), headers={"Content-Length": str(size)})
    assert response.status_code == 200
    assert response.json() == {"length": size, "crc32": pattern_crc32(size)}


def test_close_delimited_download_arrives_complete(portico: PorticoProcess) -> None:
    size = 32 * 1024 * 1024
    crc = 0
    received = 0
    with portico.client(timeout=60) as http:
        try:
            with http.stream("GET", f"/bytes/{size}?framing=close") as response:
                for data in response.iter_raw():
                    received += len(data)
                    crc = zlib.crc32(data, crc)
        except httpx.HTTPError as exc:  # pragma: no cover - reported with the byte count
            raise AssertionError(f"transfer failed after {received} bytes: {exc!r}") from exc
    assert received == size
    assert crc == pattern_crc32(size)
