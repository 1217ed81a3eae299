"""The client side of the proxy, its core: one :class:`ClientConnection` per accepted TCP
connection.

httptools parses requests; keep-alive and pipelining are supported (requests are answered in
order, one at a time). The connection owns the socket, the parser callbacks, flow control, the
timeouts and the answers Portico writes itself. For each request it hands over, in order, to
admission (:mod:`portico.gateway.admission`: the request target, Host, client address, IP rules,
the route), then to the policy runner (:mod:`portico.gateway.pipeline`), which hands the request
to a :class:`~portico.gateway.proxy.Forward` with the outbound head.
When the exchange is over it tells the completion hooks (:mod:`portico.gateway.completion`).
Request bodies stream to the upstream as they arrive; nothing is buffered beyond a small window,
and flow control pauses whichever side is too fast.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools

from portico.gateway import pipeline, problems
from portico.gateway.admission import Peer, admit
from portico.gateway.completion import CLIENT_GONE, complete
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.forwarding import IDENTITY_PREFIX, is_trusted
from portico.gateway.headers import Headers
from portico.gateway.http import CONTINUE, head_lines, new_id
from portico.gateway.proxy import Forward
from portico.gateway.request import (
    LISTS,
    MAX_HEAD_BYTES,
    METHODS,
    OVERRIDES,
    SINGLETONS,
    Request,
    RequestBody,
    special_names,
    transfer_coding_refusal,
)
from portico.gateway.spans import end_exchange
from portico.gateway.upstream import UpstreamConnection

if TYPE_CHECKING:
    from portico.gateway.app import Gateway
    from portico.gateway.snapshot import Runtime

log = logging.getLogger("portico.gateway")


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_leftover",
        "_parsing",
        "_paused",
        "_queue",
        "active",
        "background",
        "body_activity",
        "closed",
        "forward",
        "gateway",
        "last_activity",
        "loop",
        "max_fields",
        "observing",
        "parser",
        "peer",
        "replaced_fields",
        "request_id_field",
        "request_id_header",
        "runtime",
        "special_names",
        "tls",
        "transport",
        "tunnel",
        "upstream_paused_by_client",
    )

    def __init__(self, gateway: Gateway, tls: bool = False) -> None:
        self.gateway = gateway
        self.tls = tls
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None
        self.active: Request | None = None
        self._queue: deque[Request] = deque()
        self._paused: set[str] = set()
        self.forward: Forward | None = None
        self.upstream_paused_by_client = False
        self.tunnel: asyncio.Transport | None = None
        self._leftover = b""
        self.closed = False
        # The event loop keeps only weak references to tasks: the one running for the current
        # request (a policy's I/O, opening an upstream connection) is held here until it ends.
        self.background: asyncio.Task[None] | None = None
        self.runtime: Runtime = gateway.runtime
        self.request_id_header = self.runtime.settings.request_id_header.lower()
        self.peer = Peer("127.0.0.1", False, tls, None, self.request_id_header)
        self.request_id_field = self.request_id_header.encode("latin-1") + b": "
        self.special_names = special_names(self.request_id_header)
        self.replaced_fields = frozenset({self.request_id_header, "traceparent"})
        self.max_fields = self.runtime.settings.max_header_fields
        self.observing = self.runtime.timed
        """Whether exchanges are timed and told to the completion hooks and policies."""
        self.last_activity = 0.0
        self.body_activity = 0.0
        """When the current request's body last moved (or its reading was last resumed)."""

    # -- connection lifecycle ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        peer = self.peer
        peer.transport = transport
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple) and address:
            peer.ip = str(address[0])
        peer.trusted = is_trusted(peer.ip, self.runtime.trusted_proxies)
        self.gateway.connections.add(self)
        self.last_activity = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.forward is not None:
            # The client is gone mid-exchange: the upstream connection is in an unknown state.
            self.forward.cancel()
        active = self.active
        if active is not None and active.serving:
            # Nothing will call done() for it now (a policy still deciding finds the connection
            # closed): the hooks hear of it here, once.
            active.failure = CLIENT_GONE
            self.done(active)

    def check_idle(self, now: float) -> None:
        """Called by the gateway's ticker: close connections idle too long or slow to send."""
        if self.closed:
            return
        settings = self.runtime.settings
        if self.tunnel is not None:
            if now - self.last_activity > settings.tunnel_idle_timeout:
                self._close()  # connection_lost closes the upstream side
            return
        active = self.active
        if active is not None:
            # A body that stops arriving is the client's doing, unless Portico paused reading
            # (the upstream is slow to take it): then the upstream's write timeout applies.
            if (
                not active.body.complete
                and not self._paused
                and now - self.body_activity > settings.body_timeout
            ):
                self._body_timeout(active)
            return
        if self._queue:
            return
        if self._parsing is not None:
            if now - self.last_activity > settings.header_timeout:
                if self._parsing.body.received == 0:
                    self._refuse(problems.REQUEST_TIMEOUT)
                self._close()
        elif now - self.last_activity > settings.keepalive_timeout:
            self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    def close_if_idle(self) -> None:
        if self.active is None and self._parsing is None and self.tunnel is None:
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
                self.body_activity = self.loop.time()

    def _peer_transport(self) -> asyncio.Transport | None:
        if self.tunnel is not None:
            return self.tunnel
        conn = self.forward.conn if self.forward is not None else None
        return conn.transport if conn is not None else None

    def pause_writing(self) -> None:
        peer = self._peer_transport()
        if peer is not None:
            self.upstream_paused_by_client = True
            peer.pause_reading()

    def resume_writing(self) -> None:
        peer = self._peer_transport()
        if peer is not None and self.upstream_paused_by_client:
            self.upstream_paused_by_client = False
            peer.resume_reading()

    # -- parsing -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.last_activity = self.loop.time()
            self.tunnel.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._leftover += data[exc.args[0] :]
            self.pause_reading("upgrade")
        except httptools.HttpParserError:
            self._protocol_error()

    def _protocol_error(self) -> None:
        parsing = self._parsing
        kind = problems.BAD_REQUEST
        if parsing is not None and parsing.refusal is not None:
            kind = parsing.refusal
        # Whatever is in flight finishes writing first; nothing after this point is trusted.
        self._queue.clear()
        self._parsing = None
        active = self.active
        if active is None:
            self._refuse(kind)
            self._close()
            return
        self.pause_reading("error")
        active.keep_alive = False
        body = active.body
        if body.complete:
            return
        # The body in flight is broken: the upstream will never get the rest of it, and the
        # client, not the upstream, is to blame.
        body.broken = True
        forward = self.forward
        if forward is not None:
            forward.client_failed(problems.BAD_REQUEST)
        elif body.collecting or not active.serving:
            body._waiter = None
            self._problem(active, problems.BAD_REQUEST, new_id())
        # else a policy is still deciding: _forward refuses the broken body when it is done.

    def _body_timeout(self, request: Request) -> None:
        """The client stopped sending its body: 408, and the upstream is not blamed."""
        log.info("request body timed out after %.0fs", self.runtime.settings.body_timeout)
        request.keep_alive = False
        forward = self.forward
        if forward is not None:
            forward.client_failed(problems.REQUEST_TIMEOUT)
        else:
            request.body._waiter = None
            request_id = request.request_id or new_id()
            self._problem(request, problems.REQUEST_TIMEOUT, request_id)
        self._close()

    def on_message_begin(self) -> None:
        request = Request(self, self.runtime.settings.max_body_size)
        self._parsing = request
        self.last_activity = request.started = self.loop.time()
        if self.observing:
            request.t0 = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.url = request.url + url if request.url else url
        # The version, the spaces and the line end; the method is added when it is known.
        request.head_bytes += len(url) + 12
        if request.head_bytes > MAX_HEAD_BYTES:
            request.refusal = problems.URI_TOO_LONG
            raise httptools.HttpParserError("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.head_bytes += len(name) + len(value) + 4  # ": " and CR LF
        request.fields += 1
        if request.head_bytes > MAX_HEAD_BYTES or request.fields > self.max_fields:
            request.refusal = problems.HEADERS_TOO_LARGE
            raise httptools.HttpParserError("request head too large")
        key = name.decode("latin-1").lower()
        if "_" in key:
            # CGI and WSGI servers read X_Portico_Consumer as HTTP_X_PORTICO_CONSUMER, the
            # variable of X-Portico-Consumer: such fields are dropped, as nginx does by default.
            return
        text = value.decode("latin-1")
        if key in self.special_names:
            if key in OVERRIDES:
                return
            special = request.special
            if key not in special:
                special[key] = text
            elif key in LISTS:
                special[key] += ", " + text
            elif key in SINGLETONS:
                request.malformed = f"the request has more than one {key} field"
            # Other repeated fields keep their first value.
            if key == "content-length" or key == "transfer-encoding":
                request.has_body = True
        elif key.startswith(IDENTITY_PREFIX):
            request.has_identity_headers = True
        request.headers.append((key, text))

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self.parser
        raw_method = parser.get_method()
        method = METHODS.get(raw_method)
        request.method = method if method is not None else raw_method.decode("ascii")
        request.head_bytes += len(raw_method) + 2  # and the empty line that ends the head
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            request.refusal = problems.VERSION_NOT_SUPPORTED
            raise httptools.HttpParserError("unsupported HTTP version")
        request.version = version
        codings = request.special.get("transfer-encoding")
        if codings is not None:
            refusal = transfer_coding_refusal(codings, version)
            if refusal is not None:
                request.refusal = refusal
                raise httptools.HttpParserError("unusable Transfer-Encoding")
        request.keep_alive = bool(parser.should_keep_alive())
        # Only an Upgrade field or CONNECT can make the parser stop at the head.
        request.upgrade = ("upgrade" in request.special or request.method == "CONNECT") and bool(
            parser.should_upgrade()
        )
        if self.active is None:
            self.active = request
            if request.has_body or request.upgrade:
                # The body streams upstream while it arrives: start now (after this callback,
                # so what came in the same read has been fed to the body already).
                self.loop.call_soon(self._serve, request)
            # Otherwise on_message_complete, which follows at once, starts it.
        else:
            self._queue.append(request)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        self.body_activity = self.loop.time()
        request.body.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        self._parsing = None
        if request.has_body:
            # (Without a body, the upstream's read timeout counts from sending the head.)
            request.body.ended_at = self.loop.time()
        request.body.end()
        if self.active is request and not request.has_body and not request.upgrade:
            self._serve(request)

    def body_overflow(self, body: RequestBody) -> None:
        """A body grew past the route's limit while streaming to the upstream."""
        self.pause_reading("error")
        request = self.active
        if request is None or request.body is not body:
            return
        if self.forward is not None:
            self.forward.body_too_large()
        elif body.collecting:
            body._waiter = None
            exchange = request.exchange
            request_id = exchange.request_id if exchange else request.request_id or new_id()
            reply = problems.too_large(request_id, body.limit)
            self.answer(request, reply, exchange, request_id=request_id)

    # -- serving -------------------------------------------------------------------------------

    def _serve(self, request: Request) -> None:
        if self.closed or request.serving:
            return
        request.serving = True
        if not request.body.complete:
            self.body_activity = self.loop.time()
        runtime = self.gateway.runtime
        if runtime is not self.runtime:
            self.runtime = runtime
            self.max_fields = runtime.settings.max_header_fields
            self.observing = runtime.timed
        try:
            self._route(request)
        except Exception:
            log.exception("internal error serving a request")
            self.fail_internal(request)

    def fail_internal(self, request: Request) -> None:
        request_id = new_id()
        reply = problems.problem(problems.INTERNAL_ERROR, request_id)
        request.keep_alive = False
        self.reply(request, reply, request_id=request_id)
        self.done(request)

    def forward_finished(self, forward: Forward) -> None:
        self.done(forward.request)

    def done(self, request: Request) -> None:
        """The exchange is over: tell the completion hooks, then serve the next request."""
        if self.active is not request:
            return
        if self.observing:
            runtime = self.runtime
            forward = self.forward
            complete(request, request.exchange, forward, self.peer.ip, runtime.completion_hooks)
            tracing = runtime.tracing
            if tracing is not None:
                try:
                    if forward is not None:
                        forward.end_span("client_closed")  # an attempt still under way
                    end_exchange(tracing, request, self.peer)
                except Exception:
                    log.exception("tracing failed to end a span")
        self.active = None
        self.forward = None
        self.background = None
        self.last_activity = self.loop.time()
        if self.closed or self.tunnel is not None:
            return
        if not request.body.complete:
            request.body.detach()
            self._close()  # the rest of the body will not be read: the stream is out of sync
            return
        if not request.keep_alive or self.gateway.draining or request.upgrade:
            # (An upgrade that was not switched: the client may go on in the new protocol.)
            self._close()
            return
        if self._queue:
            following = self._queue.popleft()
            if not self._queue:
                self.resume_reading("pipeline")
            self.active = following
            if following.body.complete or following.has_body or following.upgrade:
                self._serve(following)
            # else: its on_message_complete has not run yet and will start it.

    def _refuse(self, kind: problems.ProblemType) -> None:
        """Answer a request that never became one (its head broken or stalled), and close."""
        request_id = new_id()
        reply = problems.problem(kind, request_id)
        reply.headers.set(self.request_id_header, request_id)
        self._write_reply(reply, keep_alive=False, head_only=False)

    def _write_reply(self, reply: Reply, *, keep_alive: bool, head_only: bool) -> int:
        """Write a complete response; the bytes written."""
        if self.closed or self.transport is None:
            return 0
        lines = head_lines(reply.status, reply.headers.items)
        if reply.status != 204:
            # A 204 has no content, and no Content-Length either (RFC 9110 §8.6).
            lines.append(f"content-length: {len(reply.body)}\r\n")
        if not keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        data = head if head_only else head + reply.body
        self.transport.write(data)
        return len(data)

    def reply(
        self,
        request: Request,
        reply: Reply,
        exchange: Exchange | None = None,
        request_id: str | None = None,
    ) -> None:
        """Answer with a response Portico made (an error, or a policy's reply).

        On a routed request the route's response hooks see it too, as they see the upstream's:
        the headers a later policy adds (CORS, rate-limit fields) are on a 401 or a 502 as well.
        """
        if exchange is not None:
            route = exchange.route
            if route is not None and route.response_pipeline:
                if route.replaced_response_names:
                    # A stored answer (a cache hit, a replay) may hold the fields of its time.
                    reply.headers.remove(*route.replaced_response_names)
                for policy in route.response_pipeline:
                    policy.on_response(exchange, reply.status, reply.headers)
            for name, value in exchange.extra_response_headers:
                reply.headers.add(name, value)
            request_id = exchange.request_id
        if request_id is not None:
            reply.headers.set(self.request_id_header, request_id)
        request.status = reply.status
        request.problem = reply.problem
        if not request.body.complete or request.upgrade:
            # The body is still arriving and will not be read, or the client asked to switch
            # protocols and was refused: the connection cannot be reused.
            request.keep_alive = False
        request.bytes_out += self._write_reply(
            reply, keep_alive=request.keep_alive, head_only=request.method == "HEAD"
        )

    def answer(
        self,
        request: Request,
        reply: Reply,
        exchange: Exchange | None = None,
        request_id: str | None = None,
    ) -> None:
        self.reply(request, reply, exchange, request_id)
        self.done(request)

    def _problem(
        self,
        request: Request,
        kind: problems.ProblemType,
        request_id: str,
        detail: str | None = None,
    ) -> None:
        # A routed request (its body being collected) keeps its id, and its route's response
        # fields (CORS, deprecation) are on the answer too.
        exchange = request.exchange
        if exchange is not None:
            request_id = exchange.request_id
        reply = problems.problem(kind, request_id, detail)
        self.answer(request, reply, exchange, request_id=request_id)

    def _route(self, request: Request) -> None:
        outcome = admit(request, self.runtime, self.peer)
        if isinstance(outcome, Reply):
            # request.exchange is set when a route was chosen (a 413, a refused upgrade): the
            # route's response hooks see the refusal, as they see its other answers.
            self.answer(request, outcome, request.exchange, request_id=request.request_id)
            return
        exchange = outcome
        request.exchange = exchange
        builtin = request.endpoint
        if builtin is not None:
            self._collect(request, lambda: pipeline.call_endpoint(self, request, exchange, builtin))
            return
        route = exchange.route
        assert route is not None
        if request.preflight:
            pipeline.preflight(self, request, exchange)
            return
        if route.needs_body:
            if request.body.complete:  # arrived with the head (a small body): nothing to wait for
                pipeline.run_with_body(self, request, exchange)
            else:
                self._collect(request, lambda: pipeline.run_with_body(self, request, exchange))
            return
        pipeline.run(self, request, exchange, 0)

    def _collect(self, request: Request, then: Callable[[], None]) -> None:
        """Read the whole body, then call ``then``; a client waiting for ``100 Continue`` is told
        to send it (else it would wait, and then be timed out)."""
        body = request.body
        expect = request.special.get("expect", "").lower() == "100-continue"
        if expect and not body.complete and body.received == 0 and self.transport is not None:
            self.transport.write(CONTINUE)
        body.collect(then)

    def start_tunnel(self, headers: Headers, conn: UpstreamConnection) -> None:
        """Switch both connections to raw byte relaying after a 101 Switching Protocols."""
        transport = self.transport
        upstream_transport = conn.transport
        assert transport is not None and upstream_transport is not None
        lines = head_lines(101, headers.items)
        lines.append("\r\n")
        transport.write("".join(lines).encode("latin-1"))
        leftover = conn.upgrade_leftover
        conn.tunnel = transport
        conn.tunnel_client = self
        self.tunnel = upstream_transport
        self.last_activity = self.loop.time()
        if leftover:
            transport.write(leftover)
        if self._leftover:
            upstream_transport.write(self._leftover)
            self._leftover = b""
        self._paused.clear()
        transport.resume_reading()
