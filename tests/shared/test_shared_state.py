"""Shared state behaves the same in the process and in a real Redis server: the same values,
expiry, set-if-absent, prefix deletion and scripts; and a Redis that is down or silent raises
SharedStateUnavailable within the configured timeout instead of hanging."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from tests.support.gateway import PorticoProcess, proxy_config
from tests.support.redis import RedisServer, redis_for_session

from portico.shared import open_shared_state
from portico.shared.memory import MemoryState
from portico.shared.redis import RedisState
from portico.shared.state import Script, SharedState, SharedStateUnavailable, Table

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _counter(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    current = int(table.get(keys[0]) or b"0") + int(args[0])
    table.set(keys[0], str(current).encode(), float(args[1]))
    return [current]


COUNTER = Script(
    "counter",
    lua="""
local current = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 1000))
return {current}
""",
    python=_counter,
)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[SharedState]:
    if request.param == "memory":
        yield MemoryState()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    redis = RedisState(server.url, timeout=1.0, key_prefix="test:")
    yield redis
    await redis.close()


async def test_values_expire_after_their_time_to_live(state: SharedState) -> None:
    await state.set("a", b"1", ttl=0.2)
    await state.set("b", b"2")
    assert await state.get("a") == b"1"
    await asyncio.sleep(0.3)
    assert await state.get("a") is None
    assert await state.get("b") == b"2"


async def test_add_sets_only_an_absent_key(state: SharedState) -> None:
    assert await state.add("k", b"first", ttl=10)
    assert not await state.add("k", b"second", ttl=10)
    assert await state.get("k") == b"first"
    assert await state.delete("k")
    assert not await state.delete("k")
    assert await state.add("k", b"third")


async def test_delete_prefix_deletes_exactly_the_keys_under_it(state: SharedState) -> None:
    for i in range(1200):
        await state.set(f"cache:r1:{i}", b"x", ttl=60)
    await state.set("cache:r10:0", b"x")
    await state.set("cache:r1*:0", b"x")  # a glob character in a key is matched literally
    assert await state.delete_prefix("cache:r1:") == 1200
    assert await state.get("cache:r10:0") == b"x"
    assert await state.delete_prefix("cache:r1*") == 1
    assert await state.get("cache:r10:0") == b"x"


async def test_a_script_gives_the_same_results_on_both_backends(state: SharedState) -> None:
    results = [await state.run(COUNTER, ["n"], ["2", "60"]) for _ in range(3)]
    assert results == [[2], [4], [6]]


async def test_concurrent_scripts_are_atomic(state: SharedState) -> None:
    await asyncio.gather(*(state.run(COUNTER, ["c"], ["1", "60"]) for _ in range(200)))
    assert await state.run(COUNTER, ["c"], ["0", "60"]) == [200]


def test_the_config_picks_the_backend() -> None:
    from portico.config.model import Redis

    assert isinstance(open_shared_state(None), MemoryState)
    chosen = open_shared_state(Redis(url="redis://127.0.0.1:1/0", timeout=0.1))
    assert isinstance(chosen, RedisState) and not chosen.local


async def test_a_stopped_redis_raises_unavailable_and_recovers_when_back(
    redis_server: RedisServer,
) -> None:
    state = RedisState(redis_server.url, timeout=0.5)
    try:
        await state.set("x", b"1")
        redis_server.stop()
        try:
            with pytest.raises(SharedStateUnavailable, match="did not answer"):
                await state.get("x")
            assert not await state.ping()
        finally:
            redis_server.start()
        assert await state.ping()
        assert await state.run(COUNTER, ["after"], ["1", "60"]) == [1]  # scripts reloaded
    finally:
        await state.close()


async def test_a_silent_redis_times_out_instead_of_hanging() -> None:
    """A server that accepts and never answers (a stalled Redis): each call ends within about
    the timeout, with the address and no password in the message."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    state = RedisState(f"redis://user:hunter2@127.0.0.1:{port}/0", timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(SharedStateUnavailable) as caught:
            await state.get("x")
        assert time.monotonic() - started < 5  # bounded: not a timing assertion of speed
        assert "hunter2" not in str(caught.value)
        assert f"127.0.0.1:{port}" in str(caught.value)
    finally:
        await state.close()
        silent.close()


def test_memory_state_bounds_its_keys() -> None:
    state = MemoryState(max_keys=100)
    for i in range(1000):
        state.table.set(f"ip:{i}", b"1", None)
    assert len(state.table) <= 100
    assert state.get_now("ip:999") == b"1"
    assert state.get_now("ip:0") is None


def test_memory_state_bounds_the_bytes_it_holds() -> None:
    # A cache of responses under many distinct queries must not exhaust the process's memory.
    state = MemoryState(max_bytes=100_000)
    for i in range(1000):
        state.table.set(f"cache:{i}", b"x" * 1000, None)
    assert state.table.size <= 100_000
    assert state.get_now("cache:999") == b"x" * 1000
    assert state.get_now("cache:0") is None
    state.table.set("cache:999", b"y", None)
    state.table.delete("cache:998")
    assert state.table.size == sum(len(k) + len(v) for k, (v, _) in state.table._values.items())


def test_readyz_reports_redis_as_degraded_without_failing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A real ``portico serve`` with a ``redis`` section: /readyz names Redis; while Redis is
    down the status is ``degraded`` with 200 (every gateway shares it), and ``ready`` again
    when it is back."""
    config = proxy_config("http://127.0.0.1:9")
    config["redis"] = {"url": redis_server.url, "timeout": "200ms"}
    config["operations"] = {"listen": {"host": "127.0.0.1", "port": 0}}
    process = PorticoProcess(tmp_path, config)
    try:
        with httpx.Client(base_url=process.operations_url, timeout=10) as ops:
            ready = ops.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready", "checks": {"store": "ok", "redis": "ok"}}
            redis_server.stop()
            try:
                degraded = ops.get("/readyz")
            finally:
                redis_server.start()
            assert degraded.status_code == 200
            assert degraded.json()["status"] == "degraded"
            assert degraded.json()["checks"]["store"] == "ok"
            assert degraded.json()["checks"]["redis"] != "ok"
            assert ops.get("/readyz").json()["status"] == "ready"
    finally:
        process.stop()


async def test_a_redis_restart_costs_no_command_its_answer(redis_server: RedisServer) -> None:
    """The connection dies with the server; the next command retries once on a new one."""
    state = RedisState(redis_server.url, timeout=1.0)
    try:
        await asyncio.gather(*(state.set(f"k{i}", b"v") for i in range(4)))  # connected
        redis_server.stop()
        redis_server.start()
        assert await state.get("k0") is None  # a new, empty server: an answer, not an error
        assert await state.add("k0", b"again")
    finally:
        await state.close()
