"""An exchange as spans (docs/tracing.md): what the gateway tells the process's
:class:`~portico.observability.tracing.Tracing`, when it has one.

- The SERVER span of a request starts at its first byte. It is made when it is first needed:
  when the request goes upstream (its id is the parent of the attempts'), or when the exchange
  ends (a request Portico answered itself: a 401, a 429, a 404). It ends with the exchange, so a
  streamed response's span covers the whole stream.
- A CLIENT span for each upstream attempt (:class:`~portico.gateway.proxy.Forward` starts it
  when it picks a target, connection included), whose id the attempt's ``traceparent`` carries.

Attribute names follow OpenTelemetry's HTTP semantic conventions; the path goes without its
query, and no header value is recorded but ``User-Agent``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from portico.core.http import HTTP_METHODS
from portico.gateway.completion import CLIENT_GONE
from portico.gateway.outbound import trace_id_for
from portico.observability.tracing import (
    CLIENT_ADDRESS,
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_REQUEST_RESEND_COUNT,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
    NETWORK_PROTOCOL_VERSION,
    PORTICO_CONSUMER,
    PORTICO_FAILURE,
    PORTICO_PROBLEM_TYPE,
    PORTICO_REQUEST_ID,
    PORTICO_ROUTE,
    PORTICO_SERVICE,
    PORTICO_TENANT,
    SERVER_ADDRESS,
    SERVER_PORT,
    URL_FULL,
    URL_PATH,
    URL_SCHEME,
    USER_AGENT_ORIGINAL,
    Attributes,
    ExchangeSpan,
    Tracing,
    UpstreamSpan,
)

if TYPE_CHECKING:
    from portico.gateway.admission import Peer
    from portico.gateway.exchange import Exchange
    from portico.gateway.request import Request
    from portico.gateway.upstream import Target


def exchange_span(tracing: Tracing, request: Request, peer: Peer) -> ExchangeSpan:
    """The request's SERVER span (made once; the request keeps it). Only the sampling decision
    is taken now: the attributes are built when it ends, and only if it is recorded."""
    span = request.span
    if span is not None:
        return span
    route = request.route
    method = request.method
    name = method + " " + route.path_template if route is not None else method
    now = time.time_ns()
    t0 = request.t0
    start = now - int((time.perf_counter() - t0) * 1e9) if t0 else now
    generated = peer.request_id_header not in request.special
    span = tracing.exchange(
        name,
        request.special.get("traceparent"),
        trace_id_for(request.request_id, generated),
        start,
    )
    request.span = span
    return span


def _request_attributes(request: Request, peer: Peer) -> Attributes:
    """What a SERVER span says of the request."""
    exchange = request.exchange
    route = request.route
    method = request.method
    attributes: Attributes = {
        HTTP_REQUEST_METHOD: method if method in HTTP_METHODS else "_OTHER",
        URL_PATH: request.log_path,
        URL_SCHEME: _scheme(exchange, peer),
        NETWORK_PROTOCOL_VERSION: request.version,
        CLIENT_ADDRESS: exchange.client_ip if exchange is not None else peer.ip,
        PORTICO_REQUEST_ID: request.request_id,
    }
    if method not in HTTP_METHODS:
        attributes[HTTP_REQUEST_METHOD_ORIGINAL] = method
    host = request.special.get("host")
    if host:
        address, port = _authority(host)
        attributes[SERVER_ADDRESS] = address
        if port:
            attributes[SERVER_PORT] = port
    agent = _user_agent(request, exchange)
    if agent:
        attributes[USER_AGENT_ORIGINAL] = agent
    if route is not None:
        attributes[HTTP_ROUTE] = route.path_template
        attributes[PORTICO_ROUTE] = route.name
        attributes[PORTICO_SERVICE] = route.service.name
    return attributes


def end_exchange(tracing: Tracing, request: Request, peer: Peer) -> None:
    """The exchange is over: its SERVER span ends (made now if nothing went upstream)."""
    span = exchange_span(tracing, request, peer)
    if not span.recording:
        return
    attributes = _request_attributes(request, peer)
    status = request.status
    if status:
        attributes[HTTP_RESPONSE_STATUS_CODE] = status
    exchange = request.exchange
    identity = exchange.identity if exchange is not None else None
    if identity is not None:
        attributes[PORTICO_CONSUMER] = identity.consumer
        if identity.tenant:
            attributes[PORTICO_TENANT] = identity.tenant
    error = ""
    description = ""
    problem = request.problem
    if problem:
        # Portico's own answer: a refusal (401, 403, 429...) or a failure (502, 504...).
        attributes[PORTICO_PROBLEM_TYPE] = problem
        error = problem.rpartition("/")[2]
        description = problem
    elif status >= 500:
        error = str(status)
    failure = request.failure
    if failure:
        attributes[PORTICO_FAILURE] = failure
        if not error and failure != CLIENT_GONE:
            error = failure  # the upstream broke off a response under way
    span.end(attributes, error, description)


def upstream_span(
    span: ExchangeSpan, request: Request, exchange: Exchange, target: Target, resend: int
) -> UpstreamSpan:
    """A CLIENT span for an attempt on ``target``; ``resend``: the attempts before it."""
    method = request.method
    if not span.recording:
        return span.upstream(method, _UNRECORDED)
    attributes: Attributes = {
        HTTP_REQUEST_METHOD: method if method in HTTP_METHODS else "_OTHER",
        SERVER_ADDRESS: target.host,
        SERVER_PORT: target.port,
        # Without the query, which may hold credentials.
        URL_FULL: target.origin + target.base_path + exchange.upstream_path,
        NETWORK_PROTOCOL_VERSION: "1.1",
    }
    if resend:
        attributes[HTTP_REQUEST_RESEND_COUNT] = resend
    return span.upstream(method, attributes)


_UNRECORDED: Attributes = {}
"""The attributes of a span that is not recorded (never read)."""


def _scheme(exchange: Exchange | None, peer: Peer) -> str:
    if exchange is not None:
        return exchange.scheme
    return "https" if peer.tls else "http"


def _authority(host: str) -> tuple[str, int]:
    """Host and port of a ``Host`` value (``[::1]:8080``, ``api.example:8443``); port 0 when
    it names none."""
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, 0
        address = host[1:end]
        rest = host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = host.partition(":")
    return address.lower(), int(port) if port.isdigit() and len(port) <= 5 else 0


def _user_agent(request: Request, exchange: Exchange | None) -> str:
    if exchange is not None:
        return exchange.headers.get("user-agent") or ""
    for name, value in request.headers:
        if name == "user-agent":
            return value
    return ""
