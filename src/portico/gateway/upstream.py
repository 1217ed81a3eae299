"""Upstream services: targets, their keep-alive connection pools, and the load balancer.

An :class:`UpstreamConnection` is an asyncio protocol speaking HTTP/1.1 to one target. It parses
responses with httptools and hands the head to the waiting request; the body is written straight
to the client's transport from the parser callback, so response bodies stream without copies or
buffering, with flow control in both directions (a slow reader pauses the other side's reading).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit, urlunsplit

import httptools

from portico.config import model
from portico.gateway.health import TargetHealth, describe_os_error, describe_tls_error
from portico.gateway.stats import ServiceStats
from portico.gateway.tls import upstream_ssl_context, upstream_tls_fingerprint

if TYPE_CHECKING:
    from portico.gateway.connection import ClientConnection
    from portico.gateway.proxy import Forward


log = logging.getLogger("portico.gateway")

_LENGTH: Final = 1
_CODINGS: Final = 2
_CONNECTION: Final = 3
_LOCATION: Final = 4
_REPLACED: Final = 5
_NOTED: Final[dict[bytes, int]] = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODINGS,
    b"connection": _CONNECTION,
    b"location": _LOCATION,
}
"""Response fields the connection notes as they are parsed. The first four decide framing (a
Content-Length passes through as is; a chunked body is de-chunked by the parser and re-framed
for the client; neither means "until the upstream closes") or need a rewrite; the others are
the names some route's policies replace (:func:`note_replaced`)."""


def note_replaced(names: frozenset[bytes]) -> None:
    """Note fields of these names while parsing (``has_replaced``): a route's policies replace
    them (``CompiledRoute.replaced_response_fields``), and a response without any is relayed
    without a pass over its fields. Names are only ever added: one no route replaces any more
    costs a pass over a response that has it, nothing else."""
    for name in names:
        _NOTED.setdefault(name, _REPLACED)


_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close"})


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The field names a ``Connection`` header lists (RFC 9110 §7.6.1), lower-cased, besides
    ``keep-alive``, which is never relayed anyway, and ``content-length``, which frames the
    response the client gets and is never removed."""
    lowered = value.lower()
    if lowered in _PLAIN_CONNECTION:
        return _NO_TOKENS  # the usual case: nothing to add to the hop-by-hop set
    return frozenset(t.strip() for t in lowered.split(b",") if t.strip()) - _FRAMING


_NO_TOKENS: frozenset[bytes] = frozenset()
_FRAMING = frozenset({b"content-length"})
_LOWER_NAMES: dict[bytes, bytes] = {}
"""Field names as servers spell them, lower-cased: a lookup costs less than ``bytes.lower``, and a
server sends the same few names over and over."""


class UpstreamError(Exception):
    """The upstream failed before a complete response head arrived."""

    def __init__(self, reason: str, *, sent: bool, kind: str = "closed") -> None:
        super().__init__(reason)
        self.reason = reason
        """What happened, for the log (``connection refused``, ``no response within 60s``): the
        client never sees it, and it holds nothing of the request."""
        self.sent = sent
        """Whether request bytes may have reached the upstream (decides if a retry is safe)."""
        self.kind = kind
        """For the metrics: ``connect``, ``tls``, ``timeout``, ``closed`` or ``invalid``."""


class UpstreamTimeout(UpstreamError):
    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason, sent=sent, kind="timeout")


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to a target; reports the response to its current :class:`Forward`.

    Parser callbacks call the forward synchronously: the response head is relayed to the client
    from ``on_headers_complete`` and body chunks from ``on_body``, with no task or future per
    request. Timeouts are checked by the gateway's ticker (:meth:`check_timeouts`).
    """

    __slots__ = (
        "_close_delimited",
        "_head_only",
        "_last_read",
        "_loop",
        "_write_paused_at",
        "chunked",
        "closed",
        "connection_tokens",
        "forward",
        "has_length",
        "has_location",
        "has_replaced",
        "head_received",
        "idle_since",
        "keep_alive",
        "parser",
        "resp_headers",
        "sent",
        "status",
        "target",
        "transfer_codings",
        "transport",
        "tunnel",
        "tunnel_client",
        "upgrade_leftover",
    )

    def __init__(self, target: Target, loop: asyncio.AbstractEventLoop) -> None:
        self.target = target
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.tunnel: asyncio.Transport | None = None
        self.tunnel_client: ClientConnection | None = None
        """The client connection of a tunnel: bytes either way keep it from timing out idle."""
        self.forward: Forward | None = None
        self._last_read = 0.0
        self._write_paused_at = 0.0
        self.head_received = False
        self.status = 0
        self.resp_headers: list[tuple[bytes, bytes]] = []
        """The response's fields as received: lower-cased names, raw values."""
        self.keep_alive = False
        self.sent = False
        self._head_only = False
        self._close_delimited = False
        self.has_length = False
        self.has_location = False
        self.has_replaced = False
        """The response has a field of a name some route's policies replace
        (:func:`note_replaced`): the proxy takes out those of its route's."""
        self.chunked = False
        self.transfer_codings = b""
        """The response's transfer codings other than a final ``chunked`` (``gzip``), as received:
        the body is relayed with those codings kept and re-chunked for the client."""
        self.connection_tokens: frozenset[bytes] = frozenset()
        """Fields the response's ``Connection`` header names (hop-by-hop, not relayed)."""
        self.upgrade_leftover = b""

    # -- driving a request ---------------------------------------------------------------------

    def begin(self, forward: Forward, head_only: bool) -> None:
        self.forward = forward
        self.has_replaced = False
        self._head_only = head_only
        self._last_read = self._loop.time()
        self.head_received = False
        self.status = 0
        self.resp_headers = []
        self.keep_alive = False
        self.sent = False
        self._close_delimited = False
        self.has_length = False
        self.has_location = False
        self.chunked = False
        self.transfer_codings = b""
        self.connection_tokens = _NO_TOKENS
        self.target.inflight.add(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.sent = True
        self.transport.write(data)

    def finish(self, complete: bool) -> bool:
        """The exchange is over; whether this connection can go back to the pool."""
        self.target.inflight.discard(self)
        self.forward = None
        reusable = complete and not self.closed and self.keep_alive
        if self._head_only:
            # httptools cannot be told a response answers HEAD, so it would wait for the body
            # the headers announce; a fresh parser starts clean for the next response.
            self.parser = httptools.HttpResponseParser(self)
        if reusable and self._write_paused_at:
            reusable = False
        return reusable

    def abort(self) -> None:
        self.closed = True
        self.target.inflight.discard(self)
        if self.transport is not None:
            self.transport.abort()

    def check_timeouts(self, now: float) -> None:
        """Called by the gateway's ticker for connections with a request in flight."""
        forward = self.forward
        if forward is None:
            return
        timeouts = self.target.timeouts
        if self._write_paused_at and now - self._write_paused_at > timeouts.write:
            reason = f"write timeout: no request bytes accepted for {timeouts.write:g}s"
            self._fail(UpstreamTimeout(reason, sent=True))
            return
        body = forward.request.body
        if not body.complete:
            # The client is still sending: the upstream owes nothing until it has the whole
            # request (a slow upload is the client's business, timed by body_timeout).
            return
        since = self._last_read if self._last_read > body.ended_at else body.ended_at
        if now - since > timeouts.read and not forward.client_is_slow():
            reason = f"read timeout: nothing received for {timeouts.read:g}s"
            self._fail(UpstreamTimeout(reason, sent=self.sent))

    # -- asyncio protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            client = self.tunnel_client
            if client is not None:
                client.last_activity = self._loop.time()
            self.tunnel.write(data)
            return
        if self.forward is None:
            # Bytes on an idle connection: the upstream is confused; do not reuse it.
            self.abort()
            return
        self._last_read = self._loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgrade_leftover = data[exc.args[0] :]
        except httptools.HttpParserError as parse_error:
            # llhttp's message names the rule broken, never the bytes, so it is safe to log.
            reason = f"the response is not valid HTTP ({parse_error})"
            self._fail(UpstreamError(reason, sent=True, kind="invalid"))

    def eof_received(self) -> bool | None:
        if self.tunnel is not None:
            if self.tunnel.can_write_eof():
                self.tunnel.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.target.inflight.discard(self)
        if self.tunnel is not None:
            self.tunnel.close()
            return
        forward = self.forward
        if forward is None:
            self.target.pool.discard(self)
            return
        if self.head_received and self._close_delimited:
            forward.upstream_done(self)  # a response delimited by closing the connection
            return
        if isinstance(exc, ssl.SSLError) and not self.head_received:
            # With TLS 1.3 a target judges our certificate after our side of the handshake is
            # done, so its refusal arrives once the request is written. The target read none of
            # it, but that is only known when its alert arrives before its reset, which is a
            # race: the request counts as sent, the same whichever arrives first.
            self._fail(UpstreamError(describe_tls_error(exc), sent=self.sent, kind="tls"))
            return
        reason = "the upstream closed the connection before the response was complete"
        if isinstance(exc, OSError):
            reason += f" ({describe_os_error(exc)})"
        self._fail(UpstreamError(reason, sent=self.sent))

    def pause_writing(self) -> None:
        self._write_paused_at = self._loop.time()
        if self.forward is not None:
            self.forward.client.pause_reading("upstream")
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused_at = 0.0
        if self.forward is not None:
            self.forward.client.resume_reading("upstream")
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _LOWER_NAMES.get(name)
        if key is None:
            key = name.lower()
            if len(_LOWER_NAMES) < 1024:
                _LOWER_NAMES[name] = key
        noted = _NOTED.get(key, 0)
        if noted:
            if noted == _CONNECTION:
                self.connection_tokens = self.connection_tokens | connection_tokens(value)
            elif noted == _LENGTH:
                self.has_length = True
            elif noted == _LOCATION:
                self.has_location = True
            elif noted == _CODINGS:
                self._transfer_encoding(value)
            else:
                self.has_replaced = True
        self.resp_headers.append((key, value))

    def _transfer_encoding(self, value: bytes) -> None:
        codings = self.transfer_codings + b", " + value if self.transfer_codings else value
        if self.chunked:
            codings += b", chunked"
        names = [name.strip().lower() for name in codings.split(b",")]
        # RFC 9112 §6.3: chunked last means chunked framing; any other last coding means the body
        # runs until the connection closes.
        self.chunked = names[-1] == b"chunked"
        self.transfer_codings = b", ".join(names[:-1] if self.chunked else names)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim response (103 Early Hints, a stray 100): wait for the final one.
            self.resp_headers = []
            self.has_length = self.chunked = self.has_location = self.has_replaced = False
            self.transfer_codings = b""
            self.connection_tokens = _NO_TOKENS
            return
        self.status = status
        self.head_received = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        no_body = self._head_only or status in (101, 204, 304)
        self._close_delimited = not no_body and not self.has_length and not self.chunked
        forward = self.forward
        assert forward is not None
        forward.upstream_head(self)
        if no_body and status != 101 and self.forward is forward:
            forward.upstream_done(self)

    def on_body(self, body: bytes) -> None:
        forward = self.forward
        if forward is not None:
            forward.write_body(body)

    def on_message_complete(self) -> None:
        if self._head_only or self.status in (101, 204, 304) or not self.head_received:
            return
        forward = self.forward
        if forward is not None:
            forward.upstream_done(self)

    # -- failures ------------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        forward = self.forward
        self.closed = True
        self.target.inflight.discard(self)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        if forward is not None:
            forward.upstream_failed(self, error)


class Pool:
    """Idle keep-alive connections to one target (most recently used first)."""

    __slots__ = ("_idle", "_loop", "active", "settings", "target")

    def __init__(self, target: Target, settings: model.Keepalive) -> None:
        self.target = target
        self.settings = settings
        self._idle: list[UpstreamConnection] = []
        self.active = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def take_idle(self) -> UpstreamConnection | None:
        loop = self._loop
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            assert loop is not None
            if loop.time() - conn.idle_since > self.settings.idle_timeout:
                conn.abort()
                continue
            return conn
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self._loop = loop
        target = self.target
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(target, loop),
                    target.host,
                    target.port,
                    ssl=target.ssl_context,
                    server_hostname=target.server_name,
                )
        except TimeoutError as timed_out:
            # Before OSError, of which TimeoutError and SSLError are subclasses. The names differ
            # because mypyc gives a name reused by two ``except ... as`` clauses the first
            # clause's type. The TLS handshake is part of connecting, within the same timeout.
            reason = f"connect timeout: not connected within {timeout:g}s"
            raise UpstreamTimeout(reason, sent=False) from timed_out
        except ssl.SSLError as tls_error:
            raise UpstreamError(
                describe_tls_error(tls_error), sent=False, kind="tls"
            ) from tls_error
        except OSError as os_error:
            reason = describe_os_error(os_error)
            raise UpstreamError(reason, sent=False, kind="connect") from os_error
        return conn

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        self.active -= 1
        if not reusable or len(self._idle) >= self.settings.max_idle or self.target.retired:
            conn.abort()
            return
        assert self._loop is not None
        conn.idle_since = self._loop.time()
        self._idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    def sweep(self) -> None:
        """Close idle connections past their idle timeout (runs every second)."""
        if self._loop is None or not self._idle:
            return
        now = self._loop.time()
        keep = []
        for conn in self._idle:
            if conn.closed or now - conn.idle_since > self.settings.idle_timeout:
                conn.abort()
            else:
                keep.append(conn)
        self._idle = keep

    def close(self) -> None:
        for conn in self._idle:
            conn.abort()
        self._idle.clear()


class Target:
    __slots__ = (
        "base_path",
        "current_weight",
        "health",
        "host",
        "host_header",
        "inflight",
        "label",
        "origin",
        "pool",
        "port",
        "retired",
        "server_name",
        "ssl_context",
        "timeouts",
        "url",
        "weight",
    )

    def __init__(
        self,
        spec: model.Target,
        service: model.Service,
        service_name: str,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        parts = urlsplit(spec.url)
        self.url = spec.url
        self.label = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        """The URL as logs name the target: without userinfo, which would be a password."""
        self.weight = spec.weight
        self.current_weight = 0
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc
        self.origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.base_path = parts.path.rstrip("/")
        https = parts.scheme == "https"
        self.ssl_context = ssl_context if https else None
        """The service's context (one per snapshot) for an ``https://`` target, else ``None``."""
        tls = service.tls
        # SNI and the name checked against the certificate: the URL's host unless the service
        # names another. An IP address is checked against the certificate's IP addresses and
        # never sent as SNI (RFC 6066 §3), which Python's ssl module sees to.
        self.server_name = (
            (tls.server_name if tls is not None and tls.server_name else self.host)
            if https
            else None
        )
        self.timeouts = service.timeouts
        self.health = TargetHealth(
            service_name, self.label, service.health_check, service.circuit_breaker
        )
        self.pool = Pool(self, service.keepalive)
        self.inflight: set[UpstreamConnection] = set()
        self.retired = False


class Service:
    """The live side of a configured service: targets with pools and health, and the balancer."""

    __slots__ = ("name", "spec", "stats", "targets", "tls_fingerprint")

    def __init__(self, name: str, spec: model.Service, stats: ServiceStats | None = None) -> None:
        self.name = name
        self.spec = spec
        https = any(urlsplit(t.url).scheme == "https" for t in spec.targets)
        self.tls_fingerprint = upstream_tls_fingerprint(spec.tls)
        """The TLS files as they were read: a reload that finds them changed builds the service
        again (:func:`portico.assembly.build_runtime`)."""
        # One context for all the targets, made here, once per snapshot: no TLS choice is left
        # to a request, and a service without https:// targets makes none.
        context = upstream_ssl_context(spec.tls) if https else None
        self.targets = tuple(Target(t, spec, name, context) for t in spec.targets)
        self.stats = stats if stats is not None else ServiceStats(name)
        """Failures and retries, kept by name across reloads (see GatewayStats)."""
        if https and spec.tls is not None and not spec.tls.verify:
            log.warning(
                "service %r: the certificates of its targets are not verified (tls.verify: false)",
                name,
                extra={"service": name},
            )

    def pick(self, exclude: tuple[Target, ...] = ()) -> Target | None:
        """Choose a target for the next attempt, skipping unavailable and already tried ones."""
        targets = self.targets
        if len(targets) == 1:
            only = targets[0]
            return only if only not in exclude and only.health.available() else None
        candidates = [t for t in targets if t not in exclude and t.health.available()]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.spec.balancer == "least_connections":
            return min(candidates, key=lambda t: t.pool.active / t.weight)
        # Smooth weighted round robin (as in nginx): even spread, no bursts to heavy targets.
        total = 0
        best = candidates[0]
        for t in candidates:
            t.current_weight += t.weight
            total += t.weight
            if t.current_weight > best.current_weight:
                best = t
        best.current_weight -= total
        return best

    def sweep(self) -> None:
        for target in self.targets:
            target.pool.sweep()

    def check_timeouts(self, now: float) -> None:
        for target in self.targets:
            if target.inflight:
                for conn in list(target.inflight):
                    conn.check_timeouts(now)

    def retire(self) -> None:
        """This service left the runtime: close idle connections, refuse to pool busy ones."""
        for target in self.targets:
            target.retired = True
            target.pool.close()
