"""A Redis connection for the gateway's hot path: RESP2 commands pipelined on one connection,
replies parsed by hiredis (the C parser redis-py itself uses).

Why not redis-py's asyncio client: a rate-limited request spent about 120 µs of the gateway's CPU
in it (pool checkout, command stacking, its pipeline's bookkeeping, a timeout task or timer per
call), as much as two plain proxied requests (docs/benchmarks.md, "Shared state: the Redis
client"). What a gateway needs of Redis is little: a few commands and scripts, each with a bound
on how long it may take. So:

- one connection per process, opened on first use, every command written in order on it; the
  commands of one turn of the event loop go out in one write (Redis answers them in order);
- each command's reply resolves its future; a reply error is the future's exception
  (:class:`ReplyError`);
- one watchdog timer per connection, not one per command: when the oldest unanswered command is
  older than ``timeout``, the connection is dropped and every command waiting on it fails with
  :class:`RedisUnavailable` -- a stalled Redis never holds a request longer than that;
- a connection that breaks fails the commands waiting on it (:class:`ConnectionLost`); the next
  command opens a new one (``AUTH`` and ``SELECT`` first, when the URL asks).

The URL forms are those of the config's ``redis.url``: ``redis://[[user]:password@]host[:port][/db]``,
``rediss://`` (TLS, the server's certificate verified against the system's CAs) and
``unix://[[user]:password@]/path[?db=N]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

__all__ = [
    "ConnectionLost",
    "RedisAddress",
    "RedisConnection",
    "RedisUnavailable",
    "ReplyError",
    "encode_command",
]

Arg = bytes | str | int


class ReplyError(Exception):
    """Redis answered the command with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RedisUnavailable(Exception):
    """The command got no answer: no connection could be opened, or none came in time."""


class ConnectionLost(RedisUnavailable):
    """The connection broke with the command unanswered: the command may be sent again on a new
    one (a Redis that restarted never ran it; one that was cut off may have)."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis is, and how to log in, from the config's ``redis.url``."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    """A Unix socket, instead of host and port."""
    tls: bool = False
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        db_text = query.get("db", [""])[0]
        if parts.scheme != "unix" and not db_text:
            db_text = parts.path.strip("/")
        db = int(db_text) if db_text else 0
        if parts.scheme == "unix":
            return cls(path=unquote(parts.path), username=username, password=password, db=db)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis://, rediss:// or unix:// URL: {parts.scheme}://")
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            tls=parts.scheme == "rediss",
            username=username,
            password=password,
            db=db,
        )

    def handshake(self) -> list[tuple[Arg, ...]]:
        """The commands a new connection sends before any other."""
        commands: list[tuple[Arg, ...]] = []
        if self.password is not None:
            if self.username:
                commands.append(("AUTH", self.username, self.password))
            else:
                commands.append(("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP2, an array of bulk strings (hiredis's encoder, in C)."""
    # hiredis's stub types its argument as a one-element tuple; it takes any number.
    packed: bytes = hiredis.pack_command(cast("Any", tuple(args)))
    return packed


class _Protocol(asyncio.Protocol):
    """The socket's side of a :class:`RedisConnection`: bytes in, replies out."""

    __slots__ = ("_owner", "_reader", "transport")

    def __init__(self, owner: RedisConnection) -> None:
        self._owner = owner
        self._reader = hiredis.Reader(replyError=ReplyError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                self._owner._answered(self, reply)
                reply = reader.gets()
        except hiredis.ProtocolError as exc:
            self._owner._lost(self, ConnectionLost(f"unreadable reply from Redis: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "closed by the server"
        self._owner._lost(self, ConnectionLost(f"the connection to Redis was lost ({reason})"))


class RedisConnection:
    """Commands to one Redis, pipelined on one connection, each answered within ``timeout``."""

    def __init__(self, address: RedisAddress, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        """Futures of the commands written, in order, with the monotonic time each must be
        answered by."""
        self._queued: list[tuple[bytes, asyncio.Future[Any], float]] = []
        """Commands not yet written (this turn's batch, or all of them while connecting), with
        the loop time each must be answered by."""
        self._flush_scheduled = False
        self._handshake: set[asyncio.Future[Any]] = set()
        """The futures of a new connection's AUTH and SELECT."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    def call(self, *args: Arg) -> asyncio.Future[Any]:
        """Send a command; the future has its reply, or :class:`ReplyError`,
        :class:`ConnectionLost` or :class:`RedisUnavailable`. Never waits beyond ``timeout``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(RedisUnavailable("the Redis connection is closed"))
            return future
        self._queued.append((encode_command(args), future, loop.time() + self.timeout))
        if self._protocol is None:
            self._ensure_connecting(loop)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def close(self) -> None:
        self._closed = True
        protocol, self._protocol = self._protocol, None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail_all(RedisUnavailable("the Redis connection is closed"))

    # The connection.

    def _ensure_connecting(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._connecting is None and not self._closed:
            self._connecting = loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            async with asyncio.timeout(self.timeout):
                if address.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(self), address.path
                    )
                else:
                    context = ssl.create_default_context() if address.tls else None
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(self), address.host, address.port, ssl=context
                    )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            self._connect_failed(reason)
            return
        self._connecting = None
        transport = protocol.transport
        if self._closed or transport is None or transport.is_closing():
            if transport is not None:
                transport.close()
            self._connect_failed("the connection closed at once")
            return
        self._protocol = protocol
        handshake: list[tuple[bytes, asyncio.Future[Any], float]] = []
        deadline = loop.time() + self.timeout
        for command in address.handshake():
            future: asyncio.Future[Any] = loop.create_future()
            self._handshake.add(future)
            handshake.append((encode_command(command), future, deadline))
        self._queued[:0] = handshake
        self._flush()

    def _connect_failed(self, reason: str) -> None:
        """Every command queued for the connection fails: none is left waiting for another
        attempt (the next command makes one)."""
        self._connecting = None
        address = self.address
        where = address.path or f"{address.host}:{address.port}"
        failure = RedisUnavailable(f"cannot connect to Redis at {where}: {reason}")
        queued, self._queued = self._queued, []
        for _, future, _ in queued:
            if not future.done():
                future.set_exception(failure)

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            # Lost since the batch was queued: it goes out on the next connection.
            if self._queued:
                self._ensure_connecting(asyncio.get_running_loop())
            return
        queued, self._queued = self._queued, []
        if not queued:
            return
        waiting = self._waiting
        for _, future, deadline in queued:
            waiting.append((future, deadline))
        protocol.transport.write(b"".join([data for data, _, _ in queued]))
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_at(self._waiting[0][1], self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        oldest = self._waiting[0][1]
        if oldest <= loop.time():
            self._drop(RedisUnavailable(f"Redis did not answer within {self.timeout * 1000:g} ms"))
            return
        self._watchdog = loop.call_at(oldest, self._watch)

    def _drop(self, failure: RedisUnavailable) -> None:
        """Give up on the connection: its commands fail with ``failure``, the next one opens a
        new connection."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        self._fail_all(failure)

    def _fail_all(self, failure: RedisUnavailable) -> None:
        handshake, self._handshake = self._handshake, set()
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if future in handshake:
                future.cancel()  # nobody awaits it: its failure is the others'
            elif not future.done():
                future.set_exception(failure)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    # Called by the protocol.

    def _answered(self, protocol: _Protocol, reply: Any) -> None:
        if protocol is not self._protocol or not self._waiting:
            return
        future, _ = self._waiting.popleft()
        if self._handshake and future in self._handshake:
            self._handshake.discard(future)
            future.cancel()
            if isinstance(reply, ReplyError):  # a wrong password or db: nothing after it is valid
                self._drop(RedisUnavailable(f"Redis refused the login: {reply}"))
            return
        if future.done():  # its caller gave up
            return
        if isinstance(reply, ReplyError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def _lost(self, protocol: _Protocol, failure: ConnectionLost) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._fail_all(failure)
