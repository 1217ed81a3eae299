"""Portico's Redis connection (``portico.shared.resp``) against a real ``redis-server``, checked
with redis-py (the reference client): commands pipelined on one connection and answered in
order, values byte for byte, login and database from the URL, a Unix socket, reply errors that
fail one command only, scripts loaded again after a flush; and against servers that misbehave
(silent, late, speaking garbage), where a command fails within the timeout and an answer that
comes too late is never handed to another command."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest
import redis
import redis.connection
from tests.support.redis import RedisServer, redis_for_session, running_redis

from portico.shared.redis import RedisState
from portico.shared.resp import (
    RedisAddress,
    RedisConnection,
    RedisUnavailable,
    ReplyError,
    encode_command,
)
from portico.shared.state import Script, SharedStateUnavailable, Table

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with redis_for_session() as server:
        yield server


def _incr(table: Table, keys: Sequence[str], args: Sequence[str], now: float) -> list[int]:
    raise AssertionError("the Redis backend runs the Lua")


INCR = Script("incr", lua="return {redis.call('INCRBY', KEYS[1], ARGV[1])}", python=_incr)


def test_commands_are_encoded_as_redis_py_encodes_them() -> None:
    reference = redis.connection.Connection()  # type: ignore[no-untyped-call]
    commands: list[tuple[bytes | str | int, ...]] = [
        ("PING",),
        ("SET", "k", b"v\r\n\x00\xff", "PX", 250),
        ("EVALSHA", b"a" * 40, 2, "portico:rl:a", "portico:rl:b", "1", "100", "60000", "0"),
        ("SET", "é", ""),
    ]
    for command in commands:
        packed = reference.pack_command(*command)  # type: ignore[no-untyped-call]
        assert encode_command(command) == b"".join(packed)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://127.0.0.1:6380/2", RedisAddress("127.0.0.1", 6380, db=2)),
        ("redis://localhost", RedisAddress("localhost", 6379)),
        ("rediss://cache.internal:6390/0", RedisAddress("cache.internal", 6390, tls=True)),
        ("redis://:s%40cret@h/1", RedisAddress("h", password="s@cret", db=1)),
        ("redis://app:pw@h:1/0", RedisAddress("h", 1, username="app", password="pw")),
        ("redis://[::1]:6379/0", RedisAddress("::1", 6379)),
        ("unix:///run/redis.sock?db=3", RedisAddress(path="/run/redis.sock", db=3)),
        ("unix://:pw@/run/redis.sock", RedisAddress(path="/run/redis.sock", password="pw")),
    ],
)
def test_the_url_forms_of_the_config(url: str, address: RedisAddress) -> None:
    assert RedisAddress.from_url(url) == address


async def test_concurrent_commands_are_answered_in_order_on_one_connection(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    connection = RedisConnection(RedisAddress.from_url(redis_server.url), timeout=2.0)
    try:
        # Interleaved writes and reads of many keys, all in flight at once.
        replies = await asyncio.gather(
            *(connection.call("INCRBY", f"n{i % 7}", i) for i in range(500)),
            *(connection.call("SET", f"s{i}", f"value {i}") for i in range(200)),
        )
        echoes = await asyncio.gather(*(connection.call("GET", f"s{i}") for i in range(200)))
        clients = await connection.call("CLIENT", "LIST")
    finally:
        await connection.close()

    assert replies[500:] == [b"OK"] * 200
    assert echoes == [f"value {i}".encode() for i in range(200)]
    # Each INCRBY's reply is the running sum of its key up to it: answered in order.
    sums = [0] * 7
    for i, reply in enumerate(replies[:500]):
        sums[i % 7] += i
        assert reply == sums[i % 7]
    with redis_server.client() as reference:
        assert [int(reference.get(f"n{k}") or 0) for k in range(7)] == sums
    assert clients.count(b"\n") == 1  # one connection carried them all


async def test_values_are_stored_byte_for_byte_as_redis_py_reads_them(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    value = bytes(range(256)) + b"\r\n$-1\r\n*2\r\n"
    state = RedisState(redis_server.url, timeout=1.0, key_prefix="p:")
    try:
        await state.set("bin", value, ttl=60)
        with redis_server.client() as reference:
            assert reference.get("p:bin") == value
            assert 0 < reference.pttl("p:bin") <= 60_000
            reference.set("p:theirs", b"\x00written by redis-py\xff")
        assert await state.get("theirs") == b"\x00written by redis-py\xff"
        assert await state.get("absent") is None
        assert await state.add("bin", b"other") is False
        assert await state.delete("bin") and not await state.delete("bin")
    finally:
        await state.close()


async def test_a_reply_error_fails_its_command_and_not_the_others(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    connection = RedisConnection(RedisAddress.from_url(redis_server.url), timeout=1.0)
    try:
        before = connection.call("SET", "text", "not a number")
        wrong = connection.call("INCR", "text")
        after = connection.call("GET", "text")
        assert await before == b"OK"
        with pytest.raises(ReplyError, match="not an integer"):
            await wrong
        assert await after == b"not a number"
    finally:
        await connection.close()


async def test_a_script_flushed_from_redis_is_loaded_again(redis_server: RedisServer) -> None:
    redis_server.flush()
    state = RedisState(redis_server.url, timeout=1.0)
    try:
        assert await state.run(INCR, ["c"], ["2"]) == [2]  # NOSCRIPT at first: loaded
        with redis_server.client() as reference:
            reference.script_flush()
        assert await state.run(INCR, ["c"], ["3"]) == [5]
    finally:
        await state.close()


async def test_login_and_database_come_from_the_url() -> None:
    with running_redis() as server, server.client() as admin:
        admin.acl_setuser(
            "gateway", enabled=True, passwords=["+pa:ss"], keys=["*"], commands=["+@all"]
        )
        admin.config_set("requirepass", "top secret")
        base = f"127.0.0.1:{server.port}"
        as_default = RedisState(f"redis://:top%20secret@{base}/3", timeout=1.0, key_prefix="")
        as_user = RedisState(f"redis://gateway:pa%3Ass@{base}/4", timeout=1.0, key_prefix="")
        wrong = RedisState(f"redis://:nope@{base}/0", timeout=1.0)
        try:
            await as_default.set("where", b"db 3")
            await as_user.set("where", b"db 4")
            with pytest.raises(SharedStateUnavailable, match="refused the login") as refused:
                await wrong.get("x")
            assert "nope" not in str(refused.value)
        finally:
            for state in (as_default, as_user, wrong):
                await state.close()
        with redis.Redis(port=server.port, password="top secret", db=3) as db3:
            assert db3.get("where") == b"db 3"
        with redis.Redis(port=server.port, password="top secret", db=4) as db4:
            assert db4.get("where") == b"db 4"


async def test_a_unix_socket(redis_server: RedisServer) -> None:
    redis_server.flush()
    state = RedisState(f"unix://{redis_server.socket_path}?db=5", timeout=1.0, key_prefix="")
    try:
        await state.set("over", b"the socket")
    finally:
        await state.close()
    with redis.Redis(unix_socket_path=str(redis_server.socket_path), db=5) as reference:
        assert reference.get("over") == b"the socket"


class _FakeRedis:
    """A TCP server that answers as each test says: ``replies[n]`` is what the n-th connection
    sends back for each command (``None``: nothing), after ``delays[n]`` seconds."""

    def __init__(self, replies: list[bytes | None], delays: list[float]) -> None:
        self.replies = replies
        self.delays = delays
        self.connections = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = min(self.connections, len(self.replies) - 1)
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while header := await reader.readline():  # "*N", then N bulk strings
                for _ in range(int(header[1:])):
                    await reader.readline()  # "$length"
                    await reader.readline()  # the argument (no CR LF in these tests)
                await asyncio.sleep(self.delays[n])
                reply = self.replies[n]
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"redis://127.0.0.1:{self.port}/0"


async def test_an_answer_after_the_timeout_never_reaches_another_command() -> None:
    """The first connection answers too late ("+LATE" for each line it reads); the command has
    failed by then, and the next command, on a new connection, gets its own answer."""
    fake = _FakeRedis([b"+LATE\r\n", b"+FRESH\r\n"], delays=[0.6, 0.0])
    async with fake.running() as url:
        connection = RedisConnection(RedisAddress.from_url(url), timeout=0.2)
        try:
            with pytest.raises(RedisUnavailable, match="did not answer within 200 ms"):
                await connection.call("PING")
            await asyncio.sleep(0.6)  # the late answer would have arrived by now
            assert await connection.call("PING") == b"FRESH"
        finally:
            await connection.close()
    assert fake.connections == 2


async def test_garbage_from_the_server_fails_the_command_within_the_timeout() -> None:
    fake = _FakeRedis([b"%%% not RESP\r\n"], delays=[0.0])
    async with fake.running() as url:
        state = RedisState(url, timeout=0.5)
        try:
            with pytest.raises(SharedStateUnavailable, match="unreadable reply"):
                await state.get("x")
        finally:
            await state.close()
    assert fake.connections == 2  # the command was sent once more, on a new connection


async def test_a_refused_connection_fails_every_waiting_command_at_once() -> None:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    connection = RedisConnection(RedisAddress("127.0.0.1", port), timeout=1.0)
    try:
        results = await asyncio.gather(
            *(connection.call("GET", f"k{i}") for i in range(20)), return_exceptions=True
        )
    finally:
        await connection.close()
    assert all(isinstance(r, RedisUnavailable) for r in results)
    assert "cannot connect to Redis at 127.0.0.1" in str(results[0])
