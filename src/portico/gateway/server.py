"""The client side of the proxy: one :class:`ClientConnection` per accepted TCP connection.

httptools parses requests; keep-alive and pipelining are supported (requests are answered in
order, one at a time). For each request the connection resolves the route, runs the route's
policy pipeline and hands over to a :class:`~portico.gateway.proxy.Forward`. Request bodies stream
to the upstream as they arrive; nothing is buffered beyond a small window, and flow control pauses
whichever side is too fast.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import httptools

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.forwarding import (
    IDENTITY_PREFIX,
    client_ip_from_chain,
    connection_tokens,
    is_trusted,
    upstream_headers,
)
from portico.gateway.headers import Headers
from portico.gateway.http import new_id, status_line
from portico.gateway.proxy import Forward
from portico.gateway.request import (
    LISTS,
    MAX_HEAD_BYTES,
    METHODS,
    OVERRIDES,
    SINGLETONS,
    UNNAMEABLE,
    Request,
    RequestBody,
    special_names,
    transfer_coding_refusal,
)
from portico.gateway.router import MethodNotAllowed, NoRoute
from portico.gateway.upstream import UpstreamConnection
from portico.gateway.uri import BadTarget, canonical_path, host_name, split_absolute

if TYPE_CHECKING:
    from portico.gateway.app import Gateway
    from portico.gateway.endpoints import BuiltinEndpoint
    from portico.gateway.snapshot import Runtime

log = logging.getLogger("portico.gateway")
access_log = logging.getLogger("portico.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^(?!0{32})[0-9a-f]{32}$")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_ALLOW_ANY = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


@functools.lru_cache(maxsize=4096)
def _scope_text(scopes: frozenset[str]) -> str:
    """The X-Portico-Scopes value: consumers share a few scope sets, so it is built once each."""
    return " ".join(sorted(scopes))


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_leftover",
        "_loop",
        "_parsing",
        "_paused",
        "_queue",
        "active",
        "background",
        "body_activity",
        "closed",
        "counting",
        "forward",
        "gateway",
        "last_activity",
        "max_fields",
        "parser",
        "peer_ip",
        "peer_trusted",
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
        self._loop = asyncio.get_running_loop()
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
        self.peer_ip = "127.0.0.1"
        self.peer_trusted = False
        self.runtime: Runtime = gateway.runtime
        self.request_id_header = self.runtime.settings.request_id_header.lower()
        self.request_id_field = self.request_id_header.encode("latin-1") + b": "
        self.special_names = special_names(self.request_id_header)
        self.replaced_fields = frozenset({self.request_id_header, "traceparent"})
        self.max_fields = self.runtime.settings.max_header_fields
        self.counting = self.runtime.stats.enabled
        """Whether requests are timed and counted for /metrics (``operations.metrics``)."""
        self.last_activity = 0.0
        self.body_activity = 0.0
        """When the current request's body last moved (or its reading was last resumed)."""

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

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gateway.connections.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
        if self.forward is not None:
            # The client is gone mid-exchange: the upstream connection is in an unknown state.
            self.forward.cancel()

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
                    request_id = new_id()
                    reply = problems.problem(problems.REQUEST_TIMEOUT, request_id)
                    reply.headers.set(self.request_id_header, request_id)
                    self._write_reply(reply, keep_alive=False, head_only=False)
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
                self.body_activity = self._loop.time()

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
            self.last_activity = self._loop.time()
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
            request_id = new_id()
            reply = problems.problem(kind, request_id)
            reply.headers.set(self.request_id_header, request_id)
            self._write_reply(reply, keep_alive=False, head_only=False)
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
        self.last_activity = request.started = self._loop.time()
        if self.counting:
            request.t0 = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        request = self._parsing
        assert request is not None
        request.url = request.url + url if request.url else url
        request.head_bytes += len(url) + 16  # the method, version, spaces and line end
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
                self._loop.call_soon(self._serve, request)
            # Otherwise on_message_complete, which follows at once, starts it.
        else:
            self._queue.append(request)
            self.pause_reading("pipeline")

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        self.body_activity = self._loop.time()
        request.body.feed(body)

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        self._parsing = None
        if request.has_body:
            # (Without a body, the upstream's read timeout counts from sending the head.)
            request.body.ended_at = self._loop.time()
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
            detail = f"the body is limited to {body.limit} bytes"
            request_id = new_id()
            reply = problems.problem(problems.REQUEST_TOO_LARGE, request_id, detail)
            self._answer(request, reply, request_id=request_id)

    # -- serving -------------------------------------------------------------------------------

    def _serve(self, request: Request) -> None:
        if self.closed or request.serving:
            return
        request.serving = True
        if not request.body.complete:
            self.body_activity = self._loop.time()
        runtime = self.gateway.runtime
        if runtime is not self.runtime:
            self.runtime = runtime
            self.max_fields = runtime.settings.max_header_fields
            self.counting = runtime.stats.enabled
        try:
            self._route(request)
        except Exception:
            log.exception("internal error serving a request")
            self._fail_internal(request)

    def _fail_internal(self, request: Request) -> None:
        request_id = new_id()
        reply = problems.problem(problems.INTERNAL_ERROR, request_id)
        request.keep_alive = False
        self.reply(request, reply, request_id=request_id)
        self._done(request)

    def forward_finished(self, forward: Forward) -> None:
        self._done(forward.request)

    def _done(self, request: Request) -> None:
        if self.active is not request:
            return
        stats = request.route_stats
        if stats is None and self.counting:
            stats = self.runtime.stats.unrouted
        if stats is not None and request.t0:
            forward = self.forward
            stats.record(
                request.method,
                request.status,
                time.perf_counter() - request.t0,
                forward.upstream_seconds if forward is not None else -1.0,
            )
        if self.runtime.settings.access_log:
            self._log_access(request)
        self.active = None
        self.forward = None
        self.background = None
        self.last_activity = self._loop.time()
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

    def _log_access(self, request: Request) -> None:
        """One JSON line per request. The path goes without its query string, which may hold
        credentials; header values are never logged."""
        access_log.info(
            json.dumps(
                {
                    "request_id": request.request_id,
                    "client": self.peer_ip,
                    "method": request.method,
                    "path": request.log_path or "-",
                    "status": request.status,
                    "duration_ms": round((self._loop.time() - request.started) * 1000, 3),
                },
                separators=(",", ":"),
            )
        )

    def _write_reply(self, reply: Reply, *, keep_alive: bool, head_only: bool) -> None:
        if self.closed or self.transport is None:
            return
        lines = [status_line(reply.status)]
        for name, value in reply.headers:
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"content-length: {len(reply.body)}\r\n")
        if not keep_alive:
            lines.append("connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.transport.write(head if head_only else head + reply.body)

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
                for policy in route.response_pipeline:
                    policy.on_response(exchange, reply.status, reply.headers)
            for name, value in exchange.extra_response_headers:
                reply.headers.add(name, value)
            request_id = exchange.request_id
        if request_id is not None:
            reply.headers.set(self.request_id_header, request_id)
        request.status = reply.status
        if not request.body.complete or request.upgrade:
            # The body is still arriving and will not be read, or the client asked to switch
            # protocols and was refused: the connection cannot be reused.
            request.keep_alive = False
        self._write_reply(reply, keep_alive=request.keep_alive, head_only=request.method == "HEAD")

    def _answer(
        self,
        request: Request,
        reply: Reply,
        exchange: Exchange | None = None,
        request_id: str | None = None,
    ) -> None:
        self.reply(request, reply, exchange, request_id)
        self._done(request)

    def _problem(
        self,
        request: Request,
        kind: problems.ProblemType,
        request_id: str,
        detail: str | None = None,
    ) -> None:
        self._answer(request, problems.problem(kind, request_id, detail), request_id=request_id)

    def _route(self, request: Request) -> None:
        runtime = self.runtime
        headers = Headers(request.headers)
        special = request.special
        request_id = special.get(self.request_id_header)
        if request_id is None or not _REQUEST_ID.match(request_id):
            request_id = new_id()
        request.request_id = request_id

        url = request.url
        if url == b"*":
            request.log_path = "*"
            self._asterisk(request, request_id)
            return
        authority: str | None = None
        try:
            if url.startswith(b"/"):
                raw_path, _, raw_query = url.partition(b"?")
                raw = raw_path.decode("latin-1")
                query = raw_query.decode("latin-1")
                # A fragment is the client's own business (RFC 9110 §4.2.5); it never goes
                # upstream. (Tested on text: `in` on str costs a fraction of `in` on bytes.)
                if "#" in raw:
                    raw, query = raw.partition("#")[0], ""
                elif "#" in query:
                    query = query.partition("#")[0]
            else:
                authority, raw, query = split_absolute(url.decode("latin-1"))
            request.log_path = raw
            path = canonical_path(raw)
        except BadTarget as bad:
            # (Not `exc`: mypyc types a name by its first binding, and _route binds it again.)
            self._problem(request, problems.BAD_REQUEST, request_id, bad.reason)
            return

        if request.malformed:
            self._problem(request, problems.BAD_REQUEST, request_id, request.malformed)
            return
        host_header = special.get("host", "")
        if not host_header and request.version == "1.1":
            # RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field.
            self._problem(request, problems.BAD_REQUEST, request_id, "the request has no Host")
            return
        if authority is not None:
            # RFC 9112 §3.2.2: the target's authority wins over Host, and replaces it upstream.
            host_header = special["host"] = authority
            headers.set("host", authority)
        if host_header:
            found_host = host_name(host_header)
            if found_host is None:
                detail = "the Host is not a valid host name"
                self._problem(request, problems.BAD_REQUEST, request_id, detail)
                return
            host = found_host
        else:
            host = ""

        if request.has_identity_headers:
            headers.items = [(k, v) for k, v in headers.items if not k.startswith(IDENTITY_PREFIX)]
        connection = special.get("connection")
        if connection is not None:
            # The fields the client names in Connection are hop-by-hop: they go before any policy
            # runs, so a field a policy sets can never be removed by the client.
            hop = connection_tokens(connection) - UNNAMEABLE
            if hop:
                headers.items = [(k, v) for k, v in headers.items if k not in hop]

        scheme = "https" if self.tls else "http"
        client_ip = self.peer_ip
        if self.peer_trusted:
            forwarded_for = special.get("x-forwarded-for")
            if forwarded_for:
                client_ip = client_ip_from_chain(
                    self.peer_ip, forwarded_for, runtime.trusted_proxies
                )
            scheme = headers.get("x-forwarded-proto") or scheme
        if runtime.ip_rules is not None and not runtime.ip_rules.permits(client_ip):
            self._problem(request, problems.IP_FORBIDDEN, request_id)
            return

        try:
            found = (
                runtime.endpoints.find(request.method, host, path, headers)
                if runtime.endpoints is not None
                else None
            )
            if found is not None:
                builtin, params = found
                exchange = self._exchange(
                    request, headers, raw, path, query, host, scheme, client_ip, request_id
                )
                exchange.path_params = params
                request.body.limit = builtin.max_body_size
                self._collect(request, lambda: self._call_endpoint(request, exchange, builtin))
                return
            route, params = runtime.router.match(request.method, host, path, headers)
        except NoRoute:
            self._problem(request, problems.ROUTE_NOT_FOUND, request_id)
            return
        except MethodNotAllowed as exc:
            allow = Headers([("allow", ", ".join(exc.allowed))])
            reply = problems.problem(problems.METHOD_NOT_ALLOWED, request_id, headers=allow)
            self._answer(request, reply, request_id=request_id)
            return

        request.route_stats = route.stats
        body = request.body
        body.limit = route.max_body_size
        declared = special.get("content-length")
        if (
            body.overflow
            or body.received > body.limit
            or (declared is not None and declared.isdigit() and int(declared) > body.limit)
        ):
            body.overflow = True
            detail = f"the body is limited to {body.limit} bytes on this route"
            reply = problems.problem(problems.REQUEST_TOO_LARGE, request_id, detail)
            self._answer(request, reply, request_id=request_id)
            return
        if request.upgrade and (
            not route.websocket
            or request.method != "GET"
            or special.get("upgrade", "").strip().lower() != "websocket"
        ):
            # Only WebSocket is relayed: h2c and other protocols would reach the upstream past
            # every policy of the routes behind this one.
            self._problem(request, problems.UPGRADE_NOT_ALLOWED, request_id)
            return

        exchange = self._exchange(
            request, headers, raw, path, query, host, scheme, client_ip, request_id
        )
        exchange.route = route
        exchange.path_params = params
        exchange.upstream_path = route.upstream_path(path, params, "%" in raw)
        if route.needs_body:
            self._collect(request, lambda: self._with_body(request, exchange))
            return
        self._run_pipeline(request, exchange, 0)

    def _collect(self, request: Request, then: Callable[[], None]) -> None:
        """Read the whole body, then call ``then``; a client waiting for ``100 Continue`` is told
        to send it (else it would wait, and then be timed out)."""
        body = request.body
        expect = request.special.get("expect", "").lower() == "100-continue"
        if expect and not body.complete and body.received == 0 and self.transport is not None:
            self.transport.write(_CONTINUE)
        body.collect(then)

    def _asterisk(self, request: Request, request_id: str) -> None:
        """``OPTIONS *`` asks about the server itself (RFC 9110 §9.3.7): Portico answers what it
        relays. The asterisk form is valid for nothing else (RFC 9112 §3.2.4)."""
        if request.method != "OPTIONS":
            self._problem(request, problems.BAD_REQUEST, request_id)
            return
        reply = Reply(200, Headers([("allow", _ALLOW_ANY)]))
        self._answer(request, reply, request_id=request_id)

    def _exchange(
        self,
        request: Request,
        headers: Headers,
        raw_path: str,
        path: str,
        query: str,
        host: str,
        scheme: str,
        client_ip: str,
        request_id: str,
    ) -> Exchange:
        """The exchange policies see, without a route yet (set once the route is known)."""
        transport = self.transport
        return Exchange(
            method=request.method,
            path=path,
            raw_path=raw_path,
            query=query,
            headers=headers,
            http_version=request.version,
            scheme=scheme,
            host=host,
            client_ip=client_ip,
            peer_ip=self.peer_ip,
            request_id=request_id,
            route=None,
            path_params=_NO_PARAMS,
            upstream_path=path,
            tls=transport.get_extra_info("ssl_object") if self.tls and transport else None,
        )

    def _with_body(self, request: Request, exchange: Exchange) -> None:
        if self.closed or self.active is not request:
            return
        exchange.body = request.body.whole()
        try:
            self._run_pipeline(request, exchange, 0)
        except Exception:
            log.exception("internal error serving a request")
            self._fail_internal(request)

    def _call_endpoint(
        self, request: Request, exchange: Exchange, builtin: BuiltinEndpoint
    ) -> None:
        if self.closed or self.active is not request:
            return
        body = request.body.whole()
        exchange.body = body
        try:
            outcome = builtin.endpoint.handle(exchange, body)
            if isinstance(outcome, Reply):
                self._answer(request, outcome, exchange)
            else:
                self.background = self._loop.create_task(
                    self._await_endpoint(request, exchange, outcome)
                )
        except Exception:
            log.exception("built-in endpoint failed")
            self._fail_internal(request)

    async def _await_endpoint(
        self, request: Request, exchange: Exchange, outcome: Awaitable[Reply]
    ) -> None:
        try:
            reply = await outcome
        except Exception:
            log.exception("built-in endpoint failed")
            self._fail_internal(request)
            return
        if self.closed:
            self._done(request)
        else:
            self._answer(request, reply, exchange)

    def _run_pipeline(self, request: Request, exchange: Exchange, start: int) -> None:
        assert exchange.route is not None
        pipeline = exchange.route.pipeline
        for index in range(start, len(pipeline)):
            outcome = pipeline[index].on_request(exchange)
            if outcome is None:
                continue
            if isinstance(outcome, Reply):
                self._answer(request, outcome, exchange)
                return
            if inspect.isawaitable(outcome):
                self.background = self._loop.create_task(
                    self._await_policy(request, exchange, index, outcome)
                )
                return
            raise TypeError(f"policy returned {type(outcome).__name__}")
        self._forward(request, exchange)

    async def _await_policy(
        self,
        request: Request,
        exchange: Exchange,
        index: int,
        outcome: Awaitable[Reply | None],
    ) -> None:
        try:
            result = await outcome
            if self.closed:
                self._done(request)
            elif result is not None:
                self._answer(request, result, exchange)
            else:
                self._run_pipeline(request, exchange, index + 1)
        except Exception:
            log.exception("policy failed")
            self._fail_internal(request)

    def _forward(self, request: Request, exchange: Exchange) -> None:
        if request.body.broken:
            self._problem(request, problems.BAD_REQUEST, exchange.request_id)
            return
        headers = exchange.headers
        special = request.special
        # Any Transfer-Encoding that got this far is exactly "chunked" (see on_headers_complete).
        chunked = "transfer-encoding" in special
        if exchange.body is not None and chunked:
            # Read whole already: send it with a length instead of re-chunking.
            chunked = False
            headers.set("content-length", str(len(exchange.body)))
        upgrade = "websocket" if request.upgrade else None
        fields = upstream_headers(
            headers.items,
            peer_ip=self.peer_ip,
            peer_trusted=self.peer_trusted,
            scheme=exchange.scheme,
            host_header=special.get("host", ""),  # validated: no quote or backslash
            upgrade=upgrade,
            replaced=self.replaced_fields,
        )
        fields.append((self.request_id_header, exchange.request_id))
        fields.append(
            (
                "traceparent",
                _traceparent(
                    special.get("traceparent"),
                    exchange.request_id,
                    generated_id=self.request_id_header not in special,
                ),
            )
        )
        identity = exchange.identity
        if identity is not None:
            fields.append(("x-portico-consumer", identity.consumer))
            if identity.tenant:
                fields.append(("x-portico-tenant", identity.tenant))
            fields.append(("x-portico-scopes", _scope_text(identity.scopes)))
            fields.append(("x-portico-auth-method", identity.method))
        if chunked:
            fields.append(("transfer-encoding", "chunked"))
        has_body = chunked or (
            bool(exchange.body)
            if exchange.body is not None
            else special.get("content-length", "0") != "0"
        )
        assert exchange.route is not None
        forward = Forward(self, request, exchange, exchange.route, fields, chunked, has_body)
        self.forward = forward
        expect = special.get("expect", "").lower() == "100-continue"
        if expect and forward.has_body and not request.body.complete and self.transport:
            self.transport.write(_CONTINUE)
        forward.start()

    def start_tunnel(self, headers: Headers, conn: UpstreamConnection) -> None:
        """Switch both connections to raw byte relaying after a 101 Switching Protocols."""
        transport = self.transport
        upstream_transport = conn.transport
        assert transport is not None and upstream_transport is not None
        lines = [status_line(101)]
        for name, value in headers.items:
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        transport.write("".join(lines).encode("latin-1"))
        leftover = conn.upgrade_leftover
        conn.tunnel = transport
        conn.tunnel_client = self
        self.tunnel = upstream_transport
        self.last_activity = self._loop.time()
        if leftover:
            transport.write(leftover)
        if self._leftover:
            upstream_transport.write(self._leftover)
            self._leftover = b""
        self._paused.clear()
        transport.resume_reading()


_NO_PARAMS: dict[str, str] = {}


def _traceparent(incoming: str | None, request_id: str, generated_id: bool = False) -> str:
    """W3C trace context: keep the caller's trace id and flags, with Portico's own span id.

    A new trace reuses a generated request id (32 hex digits) as its trace id, so logs and
    traces of one request share one identifier.
    """
    if incoming:
        m = _TRACEPARENT.match(incoming.strip())
        if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
            return f"00-{m.group(1)}-{new_id(8)}-{m.group(3)}"
    trace_id = request_id if generated_id or _TRACE_ID.match(request_id) else new_id(16)
    return "00-" + trace_id + "-" + new_id(8) + "-01"
