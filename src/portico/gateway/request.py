"""One request as the client connection parses it: its head, the rules a head must keep, and its
body on its way upstream.

:class:`Request` is what the parser callbacks of the client connection
(:class:`~portico.gateway.connection.ClientConnection`) fill in; the head rules (which fields the
gateway picks out, which may not be repeated, which a client may never send upstream, which
transfer codings are served) are here beside it, so the connection module keeps only the
connection. ``docs/security.md`` says why each rule is there.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from portico.core.http import HTTP_METHODS
from portico.gateway import problems

if TYPE_CHECKING:
    from portico.gateway.connection import ClientConnection
    from portico.gateway.endpoints import BuiltinEndpoint
    from portico.gateway.exchange import Exchange
    from portico.gateway.snapshot import CompiledRoute
    from portico.observability.tracing import ExchangeSpan

MAX_HEAD_BYTES = 64 * 1024
"""The request line and header fields, as sent (names, values, separators and line ends)."""
BODY_BUFFER_HIGH = 256 * 1024
_LAST_CHUNK = (b"0\r\n\r\n",)


class RequestBody:
    """The body of one request, from the client parser to the upstream connection."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_chunked",
        "_conn",
        "_discard",
        "_transport",
        "_waiter",
        "broken",
        "complete",
        "ended_at",
        "limit",
        "overflow",
        "received",
    )

    def __init__(self, conn: ClientConnection, limit: int) -> None:
        self._conn = conn
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._transport: asyncio.Transport | None = None
        self._discard = False
        self._chunked = False
        self._waiter: Callable[[], None] | None = None
        self.received = 0
        self.complete = False
        self.ended_at = 0.0
        """When the last byte arrived (the loop's clock): the upstream's read timeout counts from
        then, never while the client is still sending."""
        self.broken = False
        """The client's framing of this body turned out malformed: it will never complete."""
        self.overflow = False
        self.limit = limit

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            if not self.overflow:
                self.overflow = True
                self._conn.body_overflow(self)
            return
        transport = self._transport
        if transport is not None:
            if self._chunked:
                transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
            else:
                transport.write(data)
        elif not self._discard:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered > BODY_BUFFER_HIGH and self._waiter is None:
                self._conn.pause_reading("body")

    def end(self) -> None:
        self.complete = True
        if self._chunked and self._transport is not None:
            self._transport.writelines(_LAST_CHUNK)
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()

    def collect(self, then: Callable[[], None]) -> None:
        """Read the whole body (bounded by ``limit``), then call ``then``."""
        if self.complete:
            then()
            return
        self._waiter = then
        self._conn.resume_reading("body")

    @property
    def collecting(self) -> bool:
        return self._waiter is not None

    def whole(self) -> bytes:
        return b"".join(self._buffer)

    def attach(self, transport: asyncio.Transport, chunked: bool, head: bytes = b"") -> None:
        """Send ``head`` (the request's head, when it is not sent yet) and what arrived so far to
        the upstream in one write, then stream the rest as it comes."""
        self._chunked = chunked
        self._transport = transport
        buffered, self._buffer = self._buffer, []
        self._buffered = 0
        # One write for all of it: a small POST goes out in one system call, not two.
        parts: list[bytes] = [head] if head else []
        for data in buffered:
            if chunked:
                parts.extend((b"%x\r\n" % len(data), data, b"\r\n"))
            else:
                parts.append(data)
        if self.complete and chunked:
            parts.extend(_LAST_CHUNK)
        if parts:
            transport.writelines(parts)
        self._conn.resume_reading("body")

    def detach(self) -> None:
        """The upstream attempt ended; anything more is dropped."""
        self._transport = None
        self._discard = True
        self._buffer = []
        self._conn.resume_reading("body")

    @property
    def retryable(self) -> bool:
        """Nothing of a body was sent, so the request can be replayed on another target."""
        return self.received == 0 and self.complete


# Fields the gateway itself needs, picked out while parsing so nothing scans the list again.
SPECIAL = frozenset(
    {
        "host",
        "authorization",
        "connection",
        "content-length",
        "transfer-encoding",
        "expect",
        "traceparent",
        "x-forwarded-for",
        "upgrade",
    }
)


OVERRIDES = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-rewrite-url",
    }
)
"""Fields with which frameworks let a request say it is another method (Rails, Express, ASP.NET)
or another path (Symfony, IIS): the route and its policies were chosen by the real ones, so these
never reach the upstream."""
LISTS = frozenset({"x-forwarded-for", "transfer-encoding", "connection"})
"""Special fields whose repetitions are one list (RFC 9110 §5.3)."""
SINGLETONS = frozenset({"host", "authorization"})
"""Special fields that must not be repeated: which one would count is ambiguous (400)."""
UNNAMEABLE = frozenset({"host", "content-length", "transfer-encoding"})
"""Fields a client cannot make hop-by-hop by naming them in ``Connection``: they frame the
request or address it."""


METHODS = {m.encode("ascii"): m for m in HTTP_METHODS}


@functools.cache
def special_names(request_id_header: str) -> frozenset[str]:
    return SPECIAL | OVERRIDES | {request_id_header}


class Request:
    __slots__ = (
        "body",
        "bytes_out",
        "endpoint",
        "exchange",
        "failure",
        "fields",
        "has_body",
        "has_identity_headers",
        "head_bytes",
        "headers",
        "keep_alive",
        "log_path",
        "malformed",
        "method",
        "preflight",
        "problem",
        "refusal",
        "request_id",
        "route",
        "serving",
        "span",
        "special",
        "started",
        "status",
        "t0",
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
        self.has_body = False
        self.special: dict[str, str] = {}
        self.started = 0.0
        self.status = 0
        self.fields = 0
        self.malformed = ""
        """Why the head is unusable although it parsed (a repeated Host), or empty."""
        self.refusal: problems.ProblemType | None = None
        """Why the parser was stopped, when it is not plain malformed syntax (431, 501, 505)."""
        self.serving = False
        self.log_path = ""
        self.request_id = ""
        self.t0 = 0.0
        """``time.perf_counter()`` at the first byte of the head: the loop's clock is cached
        per iteration (milliseconds under uvloop), too coarse for latency histograms."""
        self.route: CompiledRoute | None = None
        """The matched route, once admission found it."""
        self.exchange: Exchange | None = None
        """What the policies see, once admission let the request in."""
        self.endpoint: BuiltinEndpoint | None = None
        """The built-in endpoint that serves the request, if one does."""
        self.preflight = False
        """A CORS preflight that the route's preflight policy answers (admission decides)."""
        self.bytes_out = 0
        """Bytes of the response handed to the client's socket so far."""
        self.failure = ""
        """How the exchange failed, for the completion hooks (``portico.gateway.completion``)."""
        self.problem = ""
        """The problem ``type`` of Portico's answer, when it answered with one."""
        self.span: ExchangeSpan | None = None
        """The exchange's SERVER span, once one is started (only when tracing is on)."""


def transfer_coding_refusal(codings: str, version: str) -> problems.ProblemType | None:
    """Why a request's Transfer-Encoding cannot be served (RFC 9112 §6.1), or ``None`` when it is
    exactly ``chunked``. The message framing is unknowable, so the connection closes after."""
    if version == "1.0":
        return problems.BAD_REQUEST  # HTTP/1.0 has no transfer codings: the framing is faulty
    names = [name.strip().lower() for name in codings.split(",")]
    if names[-1] != "chunked" or names.count("chunked") > 1:
        return problems.BAD_REQUEST  # a request's final coding must be chunked, once
    if len(names) > 1:
        return problems.NOT_IMPLEMENTED  # gzip, deflate, ... before chunked: not decoded here
    return None
