"""Sending one webhook attempt: an HTTP POST through the SSRF guard, and what came of it.

:class:`Sender` is what the delivery workers call for every attempt. It never raises for what
the network or the receiver did: every outcome is a :class:`SendResult`, with a stable
:attr:`~SendResult.error` class when there was no response (:data:`ERROR_CLASSES`).

The guard (:mod:`portico.events.ssrf`) is applied where a connection is opened, not only where
the URL is read: the connector's resolver (:class:`GuardedResolver`) resolves the name with the
:class:`~portico.events.ssrf.Resolver`, checks every address it got, and hands the connector
only checked addresses, which it connects to; its DNS cache is off, so every new connection
resolves and checks again. There is no second look-up between the check and the connect for a
rebinding name to answer differently, and the request still names the host (``Host``, TLS SNI and
the certificate check are the name's). An IP literal is checked when the URL is read (it cannot
change). A pooled keep-alive connection was checked when it was opened. Redirects are never
followed (a 3xx is a status like any other), no proxy is taken from the environment, no cookie is
kept, and no retry happens here: retrying is the dispatcher's decision.

The HTTP client is aiohttp: its connector's pluggable resolver is exactly the seam the guard
needs, and bench/webhook_sender.py measured it at about 2.5 times the sends per second of httpx
and httpcore, whose pool slows down as requests wait for connections (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import importlib.metadata
import re
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict
from yarl import URL

from portico.events.ssrf import (
    Destinations,
    RefusedDestination,
    Resolver,
)

__all__ = [
    "ERROR_CLASSES",
    "RESERVED_HEADERS",
    "GuardedResolver",
    "SendResult",
    "Sender",
    "SystemResolver",
    "parse_retry_after",
]

ERROR_CLASSES: Final = frozenset(
    {"timeout", "connection-refused", "connection-error", "tls-error", "protocol-error"}
)
"""What :attr:`SendResult.error` may be besides a :data:`~portico.events.ssrf.REFUSAL_REASONS`
reason:

* ``timeout``: no complete response within the attempt's timeout (connecting, sending, waiting,
  or reading the body);
* ``connection-refused``: nothing listens at the address (TCP reset on connect);
* ``connection-error``: the connection failed or was cut otherwise (unreachable, reset);
* ``tls-error``: the TLS handshake failed (certificate not trusted or not for the name, protocol);
* ``protocol-error``: the receiver's answer is not valid HTTP/1.1.
"""

RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "proxy-authorization",
    }
)
"""Header names a caller may not give :meth:`Sender.send`: the sender writes the framing and the
``Host`` itself, and hop-by-hop fields are no part of a webhook."""

DEFAULT_MAX_CONNECTIONS: Final = 100
KEEPALIVE_EXPIRY: Final = 15.0
"""Seconds an idle connection stays pooled: under the idle timeouts receivers commonly set."""


class SystemResolver:
    """The system's resolver, through the event loop's ``getaddrinfo`` (a thread, off the loop);
    here rather than in :mod:`~portico.events.ssrf`, which does no I/O (``portico check``
    imports it)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Every TCP address of ``host``, first answer first, each once."""
        loop = asyncio.get_running_loop()
        answers = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        seen: dict[str, None] = {}
        for _family, _type, _proto, _name, sockaddr in answers:
            seen.setdefault(str(sockaddr[0]), None)
        return list(seen)


def _version() -> str:
    try:
        return importlib.metadata.version("portico")
    except importlib.metadata.PackageNotFoundError:
        return "0"


USER_AGENT: Final = f"Portico-Webhooks/{_version()}"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What one attempt came to."""

    status: int | None
    """The response's status; ``None`` when there was no response (see :attr:`error`)."""
    headers: tuple[tuple[str, str], ...]
    """The response's fields, names in lower case, in the order received."""
    body: bytes
    """The start of the response body, at most the sender's ``response_body_limit`` bytes."""
    latency: float
    """Seconds from the start of the attempt to the end of the (truncated) body, or the failure."""
    error: str | None
    """``None`` when a response came (whatever its status); else one of :data:`ERROR_CLASSES`
    or a :class:`~portico.events.ssrf.RefusedDestination` reason."""
    retry_after: float | None
    """Seconds the receiver asked to wait (``Retry-After``, delay-seconds or an HTTP-date, never
    negative), or ``None``."""


def parse_retry_after(value: str, now: float) -> float | None:
    """The delay a ``Retry-After`` value asks for, in seconds from ``now`` (Unix time): a number
    of seconds, or an HTTP-date (a date in the past is 0); ``None`` when it is neither."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": no zone given; an HTTP-date is in GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


class _Refused(OSError):
    """A refusal on its way through aiohttp's connector, which passes on only ``OSError``."""

    def __init__(self, refusal: RefusedDestination) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with the SSRF guard: the name is resolved once per new connection with
    the :class:`~portico.events.ssrf.Resolver`, every address is checked, and the connector gets
    only those addresses to connect to."""

    def __init__(self, destinations: Destinations, resolver: Resolver) -> None:
        self._destinations = destinations
        self._resolver = resolver

    async def addresses(self, host: str, port: int) -> list[str]:
        """The checked addresses of ``host``; :class:`RefusedDestination` when it has none, or
        when any of them is refused (an answer mixing public and internal addresses is refused
        whole, whichever the connector would have picked)."""
        try:
            found = await self._resolver.resolve(host, port)
        except OSError:
            found = []
        if not found:
            raise RefusedDestination("unresolvable", f"{host} has no address the sender can use")
        for address in found:
            self._destinations.check_address(address)
        return found

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        """The connector's question: where may a new connection to ``host`` go."""
        try:
            found = await self.addresses(host, port)
        except RefusedDestination as exc:
            raise _Refused(exc) from None
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in found
        ]

    async def close(self) -> None:
        """Nothing to release."""


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and everything it was raised from, exception groups opened."""
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)


def _failure(exc: BaseException) -> str:
    """The stable class of a failed attempt."""
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, _Refused):
            return cause.refusal.reason
        if isinstance(cause, RefusedDestination):
            return cause.reason
    if isinstance(exc, TimeoutError):  # aiohttp's own timeouts derive from it
        return "timeout"
    if any(
        isinstance(cause, ssl.SSLError | ssl.CertificateError | aiohttp.ClientSSLError)
        for cause in causes
    ):
        return "tls-error"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError) or any(
        isinstance(cause, HttpProcessingError) for cause in causes
    ):
        return "protocol-error"
    if isinstance(exc, aiohttp.ClientConnectorError) and any(
        isinstance(cause, ConnectionRefusedError) for cause in causes
    ):
        return "connection-refused"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionRefusedError
    ):
        return "connection-refused"
    return "connection-error"


class Sender:
    """POSTs webhook attempts over a pool of keep-alive connections, through the SSRF guard.

    One per worker process, shared by every delivery; :meth:`close` when the worker stops (used
    and closed on one event loop). ``max_connections`` bounds the
    connections open at once (over all receivers): an attempt waiting for one counts against its
    own timeout, so the dispatcher runs at most that many attempts at a time. ``ssl_context``: the
    TLS client context, the system's trusted CAs by default.
    """

    def __init__(
        self,
        destinations: Destinations,
        resolver: Resolver | None = None,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        response_body_limit: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections is at least 1")
        if response_body_limit < 0:
            raise ValueError("response_body_limit is not negative")
        self._destinations = destinations
        self._limit = response_body_limit
        self.resolver = GuardedResolver(destinations, resolver or SystemResolver())
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made at the first attempt: aiohttp binds it to the running loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=self.resolver,
                use_dns_cache=False,
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_EXPIRY,
                ssl=self._ssl_context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
                raise_for_status=False,
            )
        return self._session

    async def send(
        self, url: str, headers: Sequence[tuple[str, str]], body: bytes, timeout: float
    ) -> SendResult:
        """POST ``body`` (JSON) to ``url`` with ``headers`` (the webhook's fields: see
        :func:`portico.events.signing.webhook_headers`), within ``timeout`` seconds from the
        start of the attempt to the end of the response body read. ``ValueError`` for a
        :data:`RESERVED_HEADERS` name or a value that cannot be sent; everything else that goes
        wrong is in the result."""
        started = time.perf_counter()
        try:
            destination = self._destinations.destination(url)
        except RefusedDestination as exc:
            return SendResult(None, (), b"", time.perf_counter() - started, exc.reason, None)
        target = URL.build(
            scheme=destination.scheme,
            host=f"[{destination.host}]" if ":" in destination.host else destination.host,
            port=destination.port,
            path=destination.target.partition("?")[0],
            query_string=destination.target.partition("?")[2],
            encoded=True,
        )
        head = _head(headers)
        try:
            async with asyncio.timeout(timeout):
                response = await self._open().request(
                    "POST",
                    target,
                    data=body,
                    headers=head,
                    allow_redirects=False,
                    timeout=_NO_TIMEOUT,
                )
                try:
                    data = await self._read(response)
                finally:
                    if response.content.at_eof():
                        response.release()
                    else:  # not drained: the connection cannot carry another request
                        response.close()
        except (OSError, TimeoutError, aiohttp.ClientError, HttpProcessingError) as exc:
            return SendResult(None, (), b"", time.perf_counter() - started, _failure(exc), None)
        latency = time.perf_counter() - started
        fields = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in response.raw_headers
        )
        retry_after = None
        for name, value in fields:
            if name == "retry-after":
                retry_after = parse_retry_after(value, time.time())
                break
        return SendResult(response.status, fields, data, latency, None, retry_after)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The body up to the limit. Past it, reading stops and the connection is closed rather
        than drained (a receiver answering gigabytes costs one buffer, not the download)."""
        chunks: list[bytes] = []
        size = 0
        while size <= self._limit:
            chunk = await response.content.read(self._limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[: self._limit]

    async def close(self) -> None:
        """Close every pooled connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None


_NO_TIMEOUT: Final = aiohttp.ClientTimeout(total=None)
"""The attempt's deadline is ``asyncio.timeout`` around it, one for connect, send and read."""


def _head(headers: Sequence[tuple[str, str]]) -> CIMultiDict[str]:
    """The request's fields: the caller's (the webhook's), with the sender's defaults for those
    the caller did not give. aiohttp writes Host and Content-Length."""
    head: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"the sender writes {name} itself")
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise ValueError(f"{name!r} cannot be sent as an HTTP field with that value")
        head.add(name, value)
    head.setdefault("User-Agent", USER_AGENT)
    head.setdefault("Content-Type", "application/json")
    return head


_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE: Final = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
