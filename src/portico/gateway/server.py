"""The client side of the proxy: one :class:`ClientConnection` per accepted TCP connection.

httptools parses requests (keep-alive and pipelining: requests are answered in order, one at a
time). For each request a task runs :meth:`ClientConnection._serve`: route, policies, then the
upstream attempt loop. Request bodies stream to the upstream as they arrive and response bodies
stream back from the upstream parser callbacks; neither is buffered beyond socket buffers, and
flow control pauses whichever side is too fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import httptools

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.forwarding import (
    IDENTITY_PREFIX,
    RESPONSE_HOP_BY_HOP,
    client_ip_from_chain,
    connection_tokens,
    is_trusted,
    upstream_headers,
)
from portico.gateway.headers import Headers
from portico.gateway.router import MethodNotAllowed, NoRoute, normalize_path
from portico.gateway.upstream import Target, UpstreamConnection, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from portico.gateway.app import Gateway
    from portico.runtime import CompiledRoute, Runtime

log = logging.getLogger("portico.gateway")
access_log = logging.getLogger("portico.access")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
MAX_HEAD_BYTES = 64 * 1024
BODY_BUFFER_HIGH = 256 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def new_id(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"


def _chunk_writer(transport: asyncio.Transport) -> Callable[[bytes], None]:
    write = transport.writelines

    def write_chunk(data: bytes) -> None:
        if data:
            write((b"%x\r\n" % len(data), data, b"\r\n"))

    return write_chunk


class RequestBody:
    """The body of one request, from the client parser to the upstream connection."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_chunked",
        "_conn",
        "_write",
        "complete",
        "limit",
        "overflow",
        "received",
    )

    def __init__(self, conn: ClientConnection, limit: int) -> None:
        self._conn = conn
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._write: object = None
        self._chunked = False
        self.received = 0
        self.complete = False
        self.overflow = False
        self.limit = limit

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            if not self.overflow:
                self.overflow = True
                self._conn.body_overflow()
            return
        write = self._write
        if write is None:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered > BODY_BUFFER_HIGH:
                self._conn.pause_reading("body")
        elif write is not False:
            if self._chunked:
                write((b"%x\r\n" % len(data), data, b"\r\n"))  # type: ignore[operator]
            else:
                write(data)  # type: ignore[operator]

    def end(self) -> None:
        self.complete = True
        if self._chunked and self._write not in (None, False):
            self._write((b"0\r\n\r\n",))  # type: ignore[operator]

    def attach(self, transport: asyncio.Transport, chunked: bool) -> None:
        """Send what arrived so far to the upstream, then stream the rest as it comes."""
        self._chunked = chunked
        self._write = transport.writelines if chunked else transport.write
        buffered, self._buffer = self._buffer, []
        self._buffered = 0
        for data in buffered:
            self.received -= len(data)  # feed() counts again
            self.feed(data)
        if self.complete and chunked:
            transport.writelines((b"0\r\n\r\n",))
        self._conn.resume_reading("body")

    def discard(self) -> None:
        """Drop the rest: Portico answered without the upstream."""
        self._write = False
        self._buffer = []
        self._conn.resume_reading("body")

    @property
    def retryable(self) -> bool:
        """Nothing of a body was sent, so the request can be replayed on another target."""
        return self.received == 0 and self.complete


class Request:
    __slots__ = (
        "body",
        "has_identity_headers",
        "headers",
        "head_bytes",
        "keep_alive",
        "method",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self, conn: ClientConnection, limit: int) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.method = ""
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.body = RequestBody(conn, limit)
        self.head_bytes = 0
        self.has_identity_headers = False


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_leftover",
        "_loop",
        "_parsing",
        "_paused",
        "_queue",
        "_timer",
        "active",
        "closed",
        "gateway",
        "last_activity",
        "parser",
        "peer_ip",
        "peer_trusted",
        "runtime",
        "task",
        "tls",
        "transport",
        "tunnel",
        "upstream",
        "upstream_paused_by_client",
    )

    def __init__(self, gateway: Gateway, tls: bool = False) -> None:
        self.gateway = gateway
        self.tls = tls
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None
        self.active: Request | None = None
        self._queue: deque[Request] = deque()
        self._paused: set[str] = set()
        self.upstream: UpstreamConnection | None = None
        self.upstream_paused_by_client = False
        self.tunnel: asyncio.Transport | None = None
        self._leftover = b""
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.peer_ip = "127.0.0.1"
        self.peer_trusted = False
        self.runtime: Runtime = gateway.runtime
        self.last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer_ip = str(peer[0])
        self.peer_trusted = is_trusted(self.peer_ip, self.runtime.trusted_proxies)
        self.gateway.connections.add(self)
        self.last_activity = self._loop.time()
        self._timer = self._loop.call_later(
            self.runtime.settings.header_timeout, self._check_idle
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.tunnel is not None:
            self.tunnel.close()
        if self.upstream is not None:
            # The client is gone mid-exchange: the upstream connection is in an unknown state.
            self.upstream.abort()

    def _check_idle(self) -> None:
        """Close connections idle past keepalive_timeout, or slow to send a request head."""
        self._timer = None
        if self.closed or self.tunnel is not None:
            return
        settings = self.runtime.settings
        now = self._loop.time()
        if self.active is None and not self._queue:
            parsing_head = self._parsing is not None
            limit = settings.header_timeout if parsing_head else settings.keepalive_timeout
            if now - self.last_activity >= limit:
                if parsing_head:
                    reply = problems.problem(problems.REQUEST_TIMEOUT, new_id(16))
                    self._write_reply(reply, keep_alive=False, head_only=False)
                self._close()
                return
            wait = limit - (now - self.last_activity)
        else:
            wait = settings.keepalive_timeout
        self._timer = self._loop.call_later(max(wait, 0.05), self._check_idle)

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def is_idle(self) -> bool:
        return self.active is None and self._parsing is None and self.tunnel is None

    def close_if_idle(self) -> None:
        if self.is_idle():
            self._close()

    # -- flow control --------------------------------------------------------------------------

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self._paused:
            self._paused.discard(reason)
            if not self._paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def pause_reading_for_upstream(self) -> None:
        self.pause_reading("upstream")

    def resume_reading_for_upstream(self) -> None:
        self.resume_reading("upstream")

    def pause_writing(self) -> None:
        peer = self.tunnel or (self.upstream.transport if self.upstream else None)
        if peer is not None:
            self.upstream_paused_by_client = True
            peer.pause_reading()

    def resume_writing(self) -> None:
        peer = self.tunnel or (self.upstream.transport if self.upstream else None)
        if peer is not None and self.upstream_paused_by_client:
            self.upstream_paused_by_client = False
            peer.resume_reading()

    # -- parsing -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._leftover += data[exc.args[0] :]
            self.pause_reading("upgrade")
        except httptools.HttpParserError:
            self._protocol_error(problems.BAD_REQUEST)

    def _protocol_error(self, kind: problems.ProblemType) -> None:
        # Whatever is in flight finishes writing first; nothing after this point is trusted.
        if self.active is None:
            self._write_reply(problems.problem(kind, new_id(16)), keep_alive=False, head_only=False)
            self._close()
        else:
            self._queue.clear()
            self.pause_reading("error")
            assert self.active is not None
            self.active.keep_alive = False

    def on_message_begin(self) -> None:
        self._parsing = Request(self, self.runtime.settings.max_body_size)
        self.last_activity = self._loop.time()

    def on_url(self, url: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.url += url
        request.head_bytes += len(url)
        if request.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._parsing
        assert request is not None
        key = name.decode("latin-1").lower()
        if key.startswith(IDENTITY_PREFIX):
            request.has_identity_headers = True
        request.headers.append((key, value.decode("latin-1")))
        request.head_bytes += len(name) + len(value)
        if request.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("head too large")

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode("ascii")
        request.version = parser.get_http_version()
        request.keep_alive = bool(parser.should_keep_alive())
        request.upgrade = bool(parser.should_upgrade())
        if self.active is None:
            self._start(request)
        else:
            self._queue.append(request)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.body.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        self._parsing = None
        request.body.end()

    def body_overflow(self) -> None:
        """A body grew past the route's limit while streaming."""
        request = self.active
        if request is not None and request.body.overflow:
            upstream = self.upstream
            if upstream is not None and not upstream.head_received:
                # Not answered yet: abort the upstream side and answer 413 ourselves.
                upstream.abort()
        self.pause_reading("error")

    # -- serving -------------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self.active = request
        self.runtime = self.gateway.runtime
        self.task = self._loop.create_task(self._serve(request))

    def _finish(self, request: Request) -> None:
        self.active = None
        self.upstream = None
        self.task = None
        self.last_activity = self._loop.time()
        if self.closed or self.tunnel is not None:
            return
        if not request.keep_alive or not request.body.complete or self.gateway.draining:
            self._close()
            return
        if self._queue:
            next_request = self._queue.popleft()
            if not self._queue:
                self.resume_reading("pipeline")
            self._start(next_request)
        if self._timer is None:
            self._timer = self._loop.call_later(
                self.runtime.settings.keepalive_timeout, self._check_idle
            )

    async def _serve(self, request: Request) -> None:
        request_id = ""
        responded = False
        try:
            request_id, responded = await self._proxy(request)
        except Exception:
            log.exception("internal error serving a request")
            if not responded and not self.closed:
                reply = problems.problem(problems.INTERNAL_ERROR, request_id or new_id(16))
                self._write_reply(reply, keep_alive=False, head_only=False)
            request.keep_alive = False
        finally:
            self._finish(request)

    def _write_reply(self, reply: Reply, *, keep_alive: bool, head_only: bool) -> None:
        if self.closed or self.transport is None:
            return
        lines = [_status_line(reply.status)]
        for name, value in reply.headers:
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"content-length: {len(reply.body)}\r\n")
        if not keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.transport.write(head if head_only else head + reply.body)

    def _reply(self, request: Request, reply: Reply, exchange: Exchange | None = None) -> None:
        if exchange is not None and exchange.response_headers:
            for name, value in exchange.response_headers:
                reply.headers.add(name, value)
        if not request.body.complete:
            # The body is still arriving and will not be read: the connection cannot be reused.
            request.keep_alive = False
            request.body.discard()
        self._write_reply(reply, keep_alive=request.keep_alive, head_only=request.method == "HEAD")

    async def _proxy(self, request: Request) -> tuple[str, bool]:
        """Serve one request; returns its request id and whether a response was started."""
        runtime = self.runtime
        settings = runtime.settings
        headers = Headers(request.headers)
        id_header = settings.request_id_header.lower()
        request_id = headers.get(id_header) or ""
        if not _REQUEST_ID.match(request_id):
            request_id = new_id(16)

        url = request.url
        if url.startswith(b"/"):
            raw_path, _, raw_query = url.partition(b"?")
            path = raw_path.decode("latin-1")
            query = raw_query.decode("latin-1")
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                parsed = None
            if parsed is None or not parsed.path:
                self._reply(request, problems.problem(problems.BAD_REQUEST, request_id))
                return request_id, True
            path = parsed.path.decode("latin-1")
            query = (parsed.query or b"").decode("latin-1")
        path = normalize_path(path.partition("#")[0])

        host_header = headers.get("host") or ""
        host = host_header.lower()
        if host.startswith("["):
            host = host[1 : host.find("]")]
        else:
            host = host.partition(":")[0]

        if request.has_identity_headers:
            headers.items = [(k, v) for k, v in headers.items if not k.startswith(IDENTITY_PREFIX)]

        try:
            route, params = runtime.router.match(
                request.method, host, path, dict(headers.items)
            )
        except NoRoute:
            self._reply(request, problems.problem(problems.ROUTE_NOT_FOUND, request_id))
            return request_id, True
        except MethodNotAllowed as exc:
            allow = Headers([("allow", ", ".join(exc.allowed))])
            reply = problems.problem(problems.METHOD_NOT_ALLOWED, request_id, headers=allow)
            self._reply(request, reply)
            return request_id, True

        body = request.body
        body.limit = route.max_body_size
        declared = headers.get("content-length")
        if body.overflow or body.received > body.limit or (
            declared is not None and declared.isdigit() and int(declared) > body.limit
        ):
            body.overflow = True
            detail = f"the body is limited to {body.limit} bytes on this route"
            self._reply(request, problems.problem(problems.REQUEST_TOO_LARGE, request_id, detail))
            return request_id, True
        upgrade: str | None = None
        if request.upgrade:
            if not route.websocket or request.method != "GET":
                reply = problems.problem(problems.UPGRADE_NOT_ALLOWED, request_id)
                self._reply(request, reply)
                return request_id, True
            upgrade = headers.get("upgrade") or "websocket"

        scheme = "https" if self.tls else "http"
        client_ip = self.peer_ip
        if self.peer_trusted:
            client_ip = client_ip_from_chain(
                self.peer_ip, ", ".join(headers.get_all("x-forwarded-for")), runtime.trusted_proxies
            )
            scheme = headers.get("x-forwarded-proto") or scheme
        exchange = Exchange(
            method=request.method,
            path=path,
            query=query,
            headers=headers,
            http_version=request.version,
            scheme=scheme,
            host=host,
            client_ip=client_ip,
            peer_ip=self.peer_ip,
            request_id=request_id,
            route=route,
            path_params=params,
            upstream_path=route.upstream_path(path, params),
            tls=self.transport.get_extra_info("ssl_object") if self.tls and self.transport else None,
        )
        for policy in route.pipeline:
            reply = await policy.on_request(exchange)
            if reply is not None:
                self._reply(request, reply, exchange)
                return request_id, True
        return request_id, await self._forward(request, exchange, route, host_header, upgrade)

    def _upstream_head(
        self, request: Request, exchange: Exchange, target: Target, fields: list[tuple[str, str]]
    ) -> bytes:
        route = exchange.route
        host = exchange.headers.get("host") if route.preserve_host else None
        target_path = target.base_path + exchange.upstream_path
        if exchange.query:
            target_path += "?" + exchange.query
        lines = [f"{request.method} {target_path} HTTP/1.1\r\nhost: {host or target.host_header}\r\n"]
        for name, value in fields:
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _fields_for_upstream(
        self, exchange: Exchange, host_header: str, upgrade: str | None
    ) -> tuple[list[tuple[str, str]], bool]:
        headers = exchange.headers
        chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        fields = upstream_headers(
            headers.items,
            peer_ip=self.peer_ip,
            peer_trusted=self.peer_trusted,
            scheme=exchange.scheme,
            host_header=host_header.replace('"', ""),
            upgrade=upgrade,
        )
        fields.append((self.runtime.settings.request_id_header.lower(), exchange.request_id))
        fields.append(("traceparent", _traceparent(headers.get("traceparent"))))
        identity = exchange.identity
        if identity is not None:
            fields.append(("x-portico-consumer", identity.consumer))
            if identity.tenant:
                fields.append(("x-portico-tenant", identity.tenant))
            fields.append(("x-portico-scopes", " ".join(sorted(identity.scopes))))
            fields.append(("x-portico-auth-method", identity.method))
        if chunked:
            fields.append(("transfer-encoding", "chunked"))
        return fields, chunked

    async def _forward(
        self,
        request: Request,
        exchange: Exchange,
        route: CompiledRoute,
        host_header: str,
        upgrade: str | None,
    ) -> bool:
        service = route.service
        timeouts = service.spec.timeouts
        fields, chunked = self._fields_for_upstream(exchange, host_header, upgrade)
        has_body = chunked or (exchange.headers.get("content-length") or "0") != "0"
        expect = (exchange.headers.get("expect") or "").lower() == "100-continue"
        if expect and has_body and not request.body.complete and self.transport is not None:
            self.transport.write(_CONTINUE)

        tried: tuple[Target, ...] = ()
        error: UpstreamError | None = None
        for _attempt in range(1 + service.spec.retries):
            target = service.pick(tried)
            if target is None:
                break
            tried += (target,)
            pool = target.pool
            conn = pool.take_idle()
            reused = conn is not None
            if conn is None:
                try:
                    conn = await pool.connect(timeouts.connect)
                except UpstreamError as exc:
                    target.health.failure()
                    error = exc
                    continue
            if self.closed:
                pool.active += 1
                pool.release(conn, False)
                return False
            pool.active += 1
            target.health.begin()
            self.upstream = conn
            conn.begin(self, request.method == "HEAD", timeouts.read)
            conn.write(self._upstream_head(request, exchange, target, fields))
            if has_body and conn.transport is not None:
                request.body.attach(conn.transport, chunked)
            try:
                await conn.head  # type: ignore[misc]
            except UpstreamError as exc:
                self.upstream = None
                target.health.failure()
                pool.release(conn, conn.finish())
                error = exc
                if request.body.overflow:
                    break
                safe = not exc.sent or (
                    request.method in IDEMPOTENT and request.body.retryable
                ) or (reused and request.body.retryable and request.method in IDEMPOTENT)
                if not safe or self.closed:
                    break
                continue
            return await self._respond(request, exchange, route, target, conn)

        if request.body.overflow:
            detail = f"the body is limited to {request.body.limit} bytes on this route"
            reply = problems.problem(problems.REQUEST_TOO_LARGE, exchange.request_id, detail)
        elif error is None:
            reply = problems.problem(problems.NO_HEALTHY_UPSTREAM, exchange.request_id)
            reply.headers.set("retry-after", "1")
        elif isinstance(error, UpstreamTimeout):
            reply = problems.problem(problems.UPSTREAM_TIMEOUT, exchange.request_id)
        else:
            reply = problems.problem(problems.UPSTREAM_UNAVAILABLE, exchange.request_id)
        self._reply(request, reply, exchange)
        return True

    async def _respond(
        self,
        request: Request,
        exchange: Exchange,
        route: CompiledRoute,
        target: Target,
        conn: UpstreamConnection,
    ) -> bool:
        status = conn.status
        health = target.health
        if health.fails_on_status(status):
            health.failure()
        else:
            health.success()
        headers = Headers(conn.resp_headers)
        for policy in route.response_pipeline:
            policy.on_response(exchange, status, headers)

        if status == 101 and request.upgrade:
            self._start_tunnel(headers, conn, target)
            return True

        head_only = request.method == "HEAD" or status in (204, 304)
        names = {name for name, _ in headers.items}
        length_known = "content-length" in names
        upstream_chunked = "transfer-encoding" in names
        keep_alive = request.keep_alive and not self.gateway.draining
        chunk_to_client = False
        if not head_only and not length_known:
            if request.version == "1.1":
                chunk_to_client = True
            else:
                keep_alive = False  # HTTP/1.0 client: delimit by closing
        request.keep_alive = keep_alive

        lines = [_status_line(status)]
        drop = RESPONSE_HOP_BY_HOP | connection_tokens(headers.get("connection"))
        for name, value in headers.items:
            if name not in drop:
                lines.append(f"{name}: {value}\r\n")
        for name, value in exchange.response_headers:
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"{self.runtime.settings.request_id_header.lower()}: {exchange.request_id}\r\n")
        if chunk_to_client:
            lines.append("transfer-encoding: chunked\r\n")
        elif upstream_chunked and head_only and request.version == "1.1":
            lines.append("transfer-encoding: chunked\r\n")
        if not keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")

        transport = self.transport
        if self.closed or transport is None:
            target.pool.release(conn, False)
            conn.finish()
            self.upstream = None
            return True
        transport.write("".join(lines).encode("latin-1"))
        writer = _chunk_writer(transport) if chunk_to_client else transport.write
        try:
            await conn.stream_body(writer)
        except UpstreamError:
            # The head is out: the only honest signal left is to cut the connection.
            self.upstream = None
            target.health.failure()
            target.pool.release(conn, conn.finish())
            transport.abort()
            self.closed = True
            return True
        if chunk_to_client and not self.closed:
            transport.write(b"0\r\n\r\n")
        self.upstream = None
        if self.upstream_paused_by_client:
            self.upstream_paused_by_client = False
        target.pool.release(conn, conn.finish() and request.body.complete)
        return True

    def _start_tunnel(self, headers: Headers, conn: UpstreamConnection, target: Target) -> None:
        """Switch both connections to raw byte relaying after a 101 Switching Protocols."""
        transport = self.transport
        upstream_transport = conn.transport
        assert transport is not None and upstream_transport is not None
        lines = [_status_line(101)]
        for name, value in headers.items:
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        transport.write("".join(lines).encode("latin-1"))
        leftover = conn.upgrade_leftover
        conn.finish()
        target.pool.active -= 1
        conn.tunnel = transport
        self.tunnel = upstream_transport
        self.upstream = None
        if leftover:
            transport.write(leftover)
        if self._leftover:
            upstream_transport.write(self._leftover)
            self._leftover = b""
        self._paused.clear()
        transport.resume_reading()


def _traceparent(incoming: str | None) -> str:
    """W3C trace context: keep the caller's trace id and flags, with Portico's own span id."""
    if incoming:
        m = _TRACEPARENT.match(incoming.strip())
        if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
            return f"00-{m.group(1)}-{new_id(8)}-{m.group(3)}"
    return f"00-{new_id(16)}-{new_id(8)}-01"
