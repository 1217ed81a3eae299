"""Forwarding one request: pick a target, send, relay the response, retry when it is safe.

A :class:`Forward` is driven by callbacks: the upstream connection calls :meth:`upstream_head`,
:meth:`write_body`, :meth:`upstream_done` or :meth:`upstream_failed` from its parser. Only
opening a new upstream connection runs as a task. Retries go to another target when possible and
happen only when replaying is safe: the failure came before anything was sent (connect errors), or
the method is idempotent and the request had no body.

Failures are logged where they are decided, never on the way of a successful exchange: a retry at
INFO (the target that failed and why), an error answered to the client (502, 503, 504) or a
response cut short at WARNING. Each line names the service, the target and the request id, in the
message and as the record's fields; none holds the request's path, query or headers, which may
carry the client's credentials.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from portico.gateway import problems, upstream_log
from portico.gateway.completion import UPSTREAM_BROKE
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.forwarding import client_locations
from portico.gateway.headers import Headers, decoded
from portico.gateway.http import status_line_bytes
from portico.gateway.response_body import BodyHooks
from portico.gateway.spans import upstream_span
from portico.gateway.upstream import (
    Target,
    UpstreamConnection,
    UpstreamError,
    UpstreamTimeout,
    connection_tokens,
)

if TYPE_CHECKING:
    from portico.gateway.connection import ClientConnection
    from portico.gateway.request import Request
    from portico.gateway.snapshot import CompiledRoute
    from portico.observability.tracing import UpstreamSpan


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RESPONSE_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Response fields a proxy does not relay (RFC 9110 §7.6.1); framing is Portico's own."""
_LENGTH = frozenset({b"content-length"})


def _tokens(fields: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The tokens of the ``Connection`` fields: the hop-by-hop fields they name are dropped."""
    return frozenset(
        token for k, v in fields if k == b"connection" for token in connection_tokens(v)
    )


class Forward:
    __slots__ = (
        "_attempts_left",
        "_body",
        "_chunk_to_client",
        "_error",
        "_fields",
        "_pending_head",
        "_sent_at",
        "_span",
        "_target",
        "_tried",
        "_writing",
        "client",
        "conn",
        "exchange",
        "has_body",
        "request",
        "request_chunked",
        "responded",
        "route",
        "upstream_seconds",
    )

    def __init__(
        self,
        client: ClientConnection,
        request: Request,
        exchange: Exchange,
        route: CompiledRoute,
        fields: str,
        chunked: bool,
        has_body: bool,
    ) -> None:
        self.client = client
        self.request = request
        self.exchange = exchange
        self.route = route
        self.request_chunked = chunked
        self.has_body = has_body
        self._fields = fields
        """The request's field lines after Host (which depends on the target), and the empty
        line (:func:`~portico.gateway.outbound.outbound_fields`)."""
        self._tried: tuple[Target, ...] = ()
        self._error: UpstreamError | None = None
        self._attempts_left = 1 + route.service.spec.retries
        self._target: Target | None = None
        self._chunk_to_client = False
        self._writing = False
        """The response head is ready: body chunks go to the client. (A flag, not a bound
        method kept on self: that would be a reference cycle, left to the garbage collector.)"""
        self._pending_head = b""
        self._body: BodyHooks | None = None
        """The route's response-body hooks at work on this response; ``None``: relayed as is."""
        self.responded = False
        self.conn: UpstreamConnection | None = None
        self._sent_at = 0.0
        self.upstream_seconds = -1.0
        """From sending the head of the last attempt to its response head; -1 without one."""
        self._span: UpstreamSpan | None = None
        """The CLIENT span of the attempt under way, when the exchange is traced."""

    @property
    def target(self) -> Target | None:
        """The target of the last attempt, if any."""
        return self._target

    @property
    def head_sent(self) -> bool:
        """Some of the response has reached the client: an error can no longer be answered."""
        body = self._body
        return self.responded and not self._pending_head and (body is None or not body.holding)

    def client_is_slow(self) -> bool:
        return self.client.upstream_paused_by_client

    # -- attempts ------------------------------------------------------------------------------

    def start(self) -> None:
        self._attempt()

    def _attempt(self) -> None:
        service = self.route.service
        target = service.pick(self._tried) if self._attempts_left > 0 else None
        if target is None:
            self._give_up()
            return
        self._attempts_left -= 1
        if self._tried:
            service.stats.retries += 1
            error = self._error
            if error is not None:
                request_id = self.exchange.request_id
                upstream_log.retrying(self.route, request_id, self._tried[-1], error, target)
        self._tried += (target,)
        trace = self.request.span
        if trace is not None:
            resend = len(self._tried) - 1
            self._span = upstream_span(trace, self.request, self.exchange, target, resend)
        conn = target.pool.take_idle()
        if conn is None:
            task = asyncio.get_running_loop().create_task(self._connect(target))
            self.client.background = task
        else:
            self._send(target, conn)

    async def _connect(self, target: Target) -> None:
        try:
            conn = await target.pool.connect(target.timeouts.connect)
        except UpstreamError as exc:
            target.health.failure(exc.reason)
            self.route.service.stats.error(exc.kind)
            self._error = exc
            self.end_span(exc.kind)
            if not self.client.closed:
                self._attempt()
            else:
                self.client.forward_finished(self)
            return
        except Exception as unexpected:
            reason = f"unexpected error connecting: {type(unexpected).__name__}"
            self._error = UpstreamError(reason, sent=False, kind="connect")
            upstream_log.unexpected(self.route, self.exchange.request_id, target, self._error)
            self.end_span("connect")
            self._give_up()
            return
        if self.client.closed:
            conn.abort()
            self.client.forward_finished(self)
            return
        self._send(target, conn)

    def _send(self, target: Target, conn: UpstreamConnection) -> None:
        self._target = target
        target.pool.active += 1
        target.health.begin()
        self.conn = conn
        conn.begin(self, self.request.method == "HEAD")
        if self.client.observing:
            self._sent_at = time.perf_counter()
        exchange = self.exchange
        host = self.request.special.get("host") if self.route.preserve_host else None
        query = exchange.query
        fields = self._fields
        span = self._span
        if span is not None:
            fields = "traceparent: " + span.traceparent + "\r\n" + fields
        head = "".join(
            (
                self.request.method,
                " ",
                target.base_path,
                exchange.upstream_path,
                "?" if query else "",
                query,
                " HTTP/1.1\r\nhost: ",
                host or target.host_header,
                "\r\n",
                fields,
            )
        )
        data = head.encode("latin-1")
        if self.has_body and conn.transport is not None:
            conn.sent = True
            self.request.body.attach(conn.transport, self.request_chunked, data)
        else:
            conn.write(data)

    def _give_up(self) -> None:
        request_id = self.exchange.request_id
        body = self.request.body
        error = self._error
        if body.overflow:
            reply = problems.too_large(request_id, body.limit)
        elif error is None:
            reply = problems.problem(problems.NO_HEALTHY_UPSTREAM, request_id)
            reply.headers.set("retry-after", "1")
            upstream_log.no_target(self.route, request_id, reply.status)
        else:
            if isinstance(error, UpstreamTimeout):
                reply = problems.problem(problems.UPSTREAM_TIMEOUT, request_id)
            else:
                reply = problems.problem(problems.UPSTREAM_UNAVAILABLE, request_id)
            # The error is the last attempt's, and the last target tried is the one that failed.
            tried = self._tried
            upstream_log.gave_up(self.route, request_id, tried[-1], error, len(tried), reply.status)
        self.client.reply(self.request, reply, self.exchange)
        self.client.forward_finished(self)

    # -- upstream callbacks --------------------------------------------------------------------

    def upstream_failed(self, conn: UpstreamConnection, error: UpstreamError) -> None:
        target = self._target
        assert target is not None
        target.health.failure(error.reason)
        self.route.service.stats.error(error.kind)
        target.pool.release(conn, conn.finish(False))
        self.conn = None
        self.end_span(error.kind)
        if self._pending_head or (self._body is not None and self._body.holding):
            # Never sent: the client can still get a clean error.
            self._pending_head = b""
            self._body = None
            self.responded = False
        if self.responded:
            # The head is out: the only honest signal left is to cut the connection.
            upstream_log.cut_short(self.route, self.exchange.request_id, target, error)
            self.request.failure = UPSTREAM_BROKE
            self.client.abort()
            self.client.forward_finished(self)
            return
        self._error = error
        request = self.request
        replayable = request.method in IDEMPOTENT and request.body.retryable
        if self.client.closed:
            self.client.forward_finished(self)
        elif not request.body.overflow and (not error.sent or replayable):
            self._attempt()
        else:
            self._give_up()

    def upstream_head(self, conn: UpstreamConnection) -> None:
        if self._sent_at:
            self.upstream_seconds = time.perf_counter() - self._sent_at
        target = self._target
        assert target is not None
        status = conn.status
        if target.health.fails_on_status(status):
            target.health.failure(f"status {status}")
        else:
            target.health.success()
        span = self._span
        if span is not None:
            span.respond(status)
        exchange = self.exchange
        request = self.request
        route = self.route
        fields = conn.resp_headers
        tokens = conn.connection_tokens
        headers: Headers | None = None
        replaced = route.replaced_response_fields
        fielders = route.response_fields
        if conn.has_replaced and replaced:
            # Before any policy, on either path: a new list without the fields theirs replace.
            fields = [field for field in fields if field[0] not in replaced]
        if fielders is not None:
            # Fields only: the upstream's head stays bytes (no decoding, no encoding back).
            for fielder in fielders:
                fielder.response_fields(exchange, status, fields)
        elif route.response_pipeline:
            # Policies work on text fields; without any, the raw fields are relayed as they came.
            headers = decoded(fields)
            original = headers.items
            count = len(original)
            for policy in route.response_pipeline:
                policy.on_response(exchange, status, headers)
            items = headers.items
            if items is original and len(items) >= count:
                # The policies only added fields (every other change makes a new list): the
                # upstream's are relayed as they came, the added ones encoded.
                added = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items[count:]]
                if added:
                    fields = fields + added
                    if any(k == b"connection" for k, _ in added):
                        tokens = _tokens(fields)
            else:
                fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
                tokens = _tokens(fields)
        drop = RESPONSE_HOP_BY_HOP | tokens if tokens else RESPONSE_HOP_BY_HOP
        if conn.has_location and route.rewrite_location:
            host = request.special.get("host") or target.host_header
            fields = client_locations(
                fields,
                target_origin=target.origin,
                base_path=target.base_path,
                prefix=route.strip_prefix or "",
                client_origin=exchange.scheme + "://" + host,
            )
        client = self.client
        self.responded = True
        request.status = status
        if status == 101 and request.upgrade:
            client.start_tunnel(headers if headers is not None else decoded(fields), conn)
            conn.finish(False)
            target.pool.active -= 1
            self.end_span("")
            client.forward_finished(self)
            return

        if request.upgrade:
            # The upstream declined the upgrade: after this response the client may still send
            # the new protocol's bytes, which are not HTTP; the connection ends here.
            request.keep_alive = False
        head_only = request.method == "HEAD" or status in (204, 304)
        keep_alive = request.keep_alive and not client.gateway.draining
        codings = conn.transfer_codings
        if codings and not head_only and request.version != "1.1":
            # HTTP/1.0 knows no transfer codings: the body cannot be relayed as it is.
            self.responded = False
            reason = "a transfer coding an HTTP/1.0 client cannot receive"
            self.upstream_failed(conn, UpstreamError(reason, sent=True, kind="invalid"))
            return
        if not head_only and (route.whole_body_pipeline or route.chunk_pipeline):
            body = self._body = BodyHooks(route, exchange, status, fields, drop)
            if body.holding:
                return  # nothing is sent until the body is whole: the policies may change the head
            # The chunks may change length: the body goes chunked (close-delimited to 1.0).
            drop = drop | _LENGTH
        chunk = False
        if codings and not head_only:
            chunk = True  # the codings are kept, chunked last (RFC 9112 §6.1)
        elif not head_only and (not conn.has_length or self._body is not None):
            if request.version == "1.1":
                chunk = True
            else:
                keep_alive = False  # an HTTP/1.0 client: delimit the body by closing
        request.keep_alive = keep_alive
        self._chunk_to_client = chunk
        head = self._render_head(status, fields, drop, codings if chunk else b"", chunk)
        transport = client.transport
        if client.closed or transport is None:
            return
        # The head waits for the first body chunk so both leave in one write (one syscall).
        self._pending_head = head
        self._writing = True

    def _render_head(
        self,
        status: int,
        fields: list[tuple[bytes, bytes]],
        drop: frozenset[bytes],
        codings: bytes,
        chunk: bool,
        length: int = -1,
    ) -> bytes:
        exchange = self.exchange
        parts = [status_line_bytes(status)]
        for name, value in fields:
            if name not in drop:
                parts.append(name)
                parts.append(b": ")
                parts.append(value)
                parts.append(b"\r\n")
        for text_name, text_value in exchange.extra_response_headers:
            parts.append(f"{text_name}: {text_value}\r\n".encode("latin-1"))
        parts.append(self.client.request_id_field)
        parts.append(exchange.request_id.encode("latin-1"))
        parts.append(b"\r\n")
        if length >= 0:
            parts.append(b"content-length: %d\r\n" % length)
        if chunk:
            if codings:
                parts.append(b"transfer-encoding: " + codings + b", chunked\r\n")
            else:
                parts.append(b"transfer-encoding: chunked\r\n")
        if not self.request.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def end_span(self, error: str) -> None:
        """End the CLIENT span of the attempt under way, if any (``error``: why it failed)."""
        span = self._span
        if span is not None:
            self._span = None
            span.end(error)

    def cancel(self) -> None:
        """The client went away: drop the upstream exchange without judging the target."""
        self.end_span("client_closed")
        conn, self.conn = self.conn, None
        if conn is not None and self._target is not None:
            conn.forward = None
            conn.abort()
            self._target.pool.release(conn, False)
            if not self.responded:
                self._target.health.abandon()

    def client_failed(self, kind: problems.ProblemType) -> None:
        """The client broke its request body (400) or stopped sending it (408): the upstream
        exchange is dropped without judging the target, and the client gets ``kind`` if no
        response has reached it yet."""
        self.cancel()
        if self.head_sent:
            self.client.abort()
        else:
            self._pending_head = b""
            reply = problems.problem(kind, self.exchange.request_id)
            self.client.reply(self.request, reply, self.exchange)
        self.client.forward_finished(self)

    def body_too_large(self) -> None:
        """The request body passed the limit while streaming: answer 413 if still possible."""
        if self.head_sent:
            self.client.abort()
            self.cancel()
            self.client.forward_finished(self)
            return
        self.cancel()
        self._give_up()

    def write_body(self, data: bytes) -> None:
        body = self._body
        if body is not None:
            data = self._through_hooks(body, data)
            if not data:
                return
        transport = self.client.transport
        if not self._writing or self.client.closed or transport is None:
            return
        head = self._pending_head
        if head:
            self._pending_head = b""
        if self._chunk_to_client:
            size = b"%x\r\n" % len(data)
            transport.writelines((head, size, data, b"\r\n"))
            self.request.bytes_out += len(head) + len(size) + len(data) + 2
        else:
            out = head + data if head else data
            transport.write(out)
            self.request.bytes_out += len(out)

    def upstream_done(self, conn: UpstreamConnection) -> None:
        target = self._target
        assert target is not None
        client = self.client
        body = self._body
        if body is not None:
            self._body = None
            if body.holding:
                if not self._send_whole(body):
                    self._finish(conn, True)
                    return
            else:
                last = body.filter(b"", True)
                if last:
                    self.write_body(last)
        if not client.closed and client.transport is not None:
            tail = b"0\r\n\r\n" if self._chunk_to_client else b""
            if self._pending_head or tail:
                out = self._pending_head + tail
                client.transport.write(out)
                self.request.bytes_out += len(out)
                self._pending_head = b""
        self._finish(conn, True)

    def _finish(self, conn: UpstreamConnection, complete: bool) -> None:
        target = self._target
        assert target is not None
        client = self.client
        self.conn = None
        self.end_span("")
        if client.upstream_paused_by_client:
            client.upstream_paused_by_client = False
            if conn.transport is not None:
                conn.transport.resume_reading()
        if complete:
            target.pool.release(conn, conn.finish(True) and self.request.body.complete)
        else:
            conn.forward = None
            conn.abort()
            target.pool.release(conn, False)
        client.forward_finished(self)

    # -- response body hooks (routes with body policies only) ----------------------------------

    def _through_hooks(self, body: BodyHooks, data: bytes) -> bytes:
        """What of ``data`` to send now, after the route's body hooks."""
        if not body.holding:
            return body.filter(data, False)
        if not body.hold(data):
            return b""
        reply = body.over_limit()
        if reply is not None:
            conn = self.conn
            self._replace(reply)
            if conn is not None:
                self._finish(conn, False)
            return b""
        # Every policy lets it through: the body streams on as the upstream sent it.
        self._start_held(body, -1)
        data = body.take_held()
        return body.filter(data, False) if self._body is not None else data

    def _send_whole(self, body: BodyHooks) -> bool:
        """The whole body is in: send what the policies made of it. ``False`` when a policy
        answered instead (the upstream connection is still usable)."""
        outcome = body.whole()
        if isinstance(outcome, Reply):
            self._replace(outcome)
            return False
        codings = self.conn.transfer_codings if self.conn is not None else b""
        self._start_held(body, -1 if codings else len(outcome))
        self._body = None
        if outcome:
            self.write_body(outcome)
        return True

    def _start_held(self, body: BodyHooks, length: int) -> None:
        """Render the head held back by the whole-body policies; ``length`` is the body's, or -1
        when it streams on (then chunked to HTTP/1.1, close-delimited to HTTP/1.0)."""
        conn = self.conn
        request = self.request
        fields = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in body.headers.items]
        codings = conn.transfer_codings if conn is not None else b""
        chunk = request.version == "1.1" and (bool(codings) or length < 0)
        if not chunk and length < 0:
            request.keep_alive = False  # an HTTP/1.0 client: delimit the body by closing
        request.keep_alive = request.keep_alive and not self.client.gateway.draining
        self._chunk_to_client = chunk
        self._pending_head = self._render_head(
            body.status, fields, body.drop | _LENGTH, codings, chunk, -1 if chunk else length
        )
        self._writing = True
        streaming_on = bool(self.route.chunk_pipeline) and length < 0
        self._body = body if streaming_on else None

    def _replace(self, reply: Reply) -> None:
        """A body policy answers instead of the upstream's response."""
        self._body = None
        self.request.keep_alive = self.request.keep_alive and self.request.body.complete
        self.client.reply(self.request, reply, self.exchange)
