"""Admission: from a parsed request head to an :class:`~portico.gateway.exchange.Exchange` on a
route (or a built-in endpoint), or to the answer that refuses it.

In order: the request id, the request target (decoded once, see :mod:`portico.gateway.uri`), the
head's own faults, Host (the target's authority wins, RFC 9112 §3.2.2), the fields the client may
not send upstream, the client address through the trusted proxies, the IP rules, the built-in
endpoints, the routes, the body limit and the upgrade rules. Nothing here writes to a socket: the
connection answers what :func:`admit` returns.
"""

from __future__ import annotations

import asyncio

from portico.core.http import REQUEST_ID_PATTERN
from portico.gateway import problems
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.forwarding import IDENTITY_PREFIX, client_ip_from_chain, connection_tokens
from portico.gateway.headers import Headers
from portico.gateway.http import new_id
from portico.gateway.request import UNNAMEABLE, Request
from portico.gateway.router import MethodNotAllowed, NoRoute
from portico.gateway.snapshot import CompiledRoute, Runtime
from portico.gateway.uri import BadTarget, canonical_path, host_name, split_absolute

_ALLOW_ANY = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class Peer:
    """What admission needs to know of the connection a request came on."""

    __slots__ = ("ip", "request_id_header", "tls", "transport", "trusted")

    def __init__(
        self,
        ip: str,
        trusted: bool,
        tls: bool,
        transport: asyncio.BaseTransport | None,
        request_id_header: str,
    ) -> None:
        self.ip = ip
        """The TCP peer's address (the client, or the last proxy)."""
        self.trusted = trusted
        """The peer is one of ``gateway.trusted_proxies``: its forwarding fields are believed."""
        self.tls = tls
        self.transport = transport
        self.request_id_header = request_id_header


def admit(request: Request, runtime: Runtime, peer: Peer) -> Exchange | Reply:
    """The exchange to serve (``exchange.route`` set, or ``request.endpoint`` for a built-in
    endpoint), or Portico's answer to a request that goes no further. ``request.request_id`` is
    set either way."""
    special = request.special
    request_id = special.get(peer.request_id_header)
    if request_id is None or not REQUEST_ID_PATTERN.match(request_id):
        request_id = new_id()
    request.request_id = request_id

    url = request.url
    if url == b"*":
        request.log_path = "*"
        return _asterisk(request, request_id)
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
        return problems.problem(problems.BAD_REQUEST, request_id, bad.reason)

    if request.malformed:
        return problems.problem(problems.BAD_REQUEST, request_id, request.malformed)
    headers = Headers(request.headers)
    host_header = special.get("host", "")
    if not host_header and request.version == "1.1":
        # RFC 9112 §3.2: an HTTP/1.1 request has exactly one Host field.
        return problems.problem(problems.BAD_REQUEST, request_id, "the request has no Host")
    if authority is not None:
        # RFC 9112 §3.2.2: the target's authority wins over Host, and replaces it upstream.
        host_header = special["host"] = authority
        headers.set("host", authority)
    if host_header:
        found_host = host_name(host_header)
        if found_host is None:
            detail = "the Host is not a valid host name"
            return problems.problem(problems.BAD_REQUEST, request_id, detail)
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

    scheme = "https" if peer.tls else "http"
    client_ip = peer.ip
    if peer.trusted:
        forwarded_for = special.get("x-forwarded-for")
        if forwarded_for:
            client_ip = client_ip_from_chain(peer.ip, forwarded_for, runtime.trusted_proxies)
        scheme = headers.get("x-forwarded-proto") or scheme
    if runtime.ip_rules is not None and not runtime.ip_rules.permits(client_ip):
        return problems.problem(problems.IP_FORBIDDEN, request_id)

    builtin: BuiltinEndpoint | None = None
    route: CompiledRoute | None = None
    preflight = (
        _preflight_route(runtime, host, path, headers) if request.method == "OPTIONS" else None
    )
    try:
        if preflight is not None:
            route, params = preflight
            request.preflight = True
        else:
            found = (
                runtime.endpoints.find(request.method, host, path, headers)
                if runtime.endpoints is not None
                else None
            )
            if found is not None:
                builtin, params = found
            else:
                route, params = runtime.router.match(request.method, host, path, headers)
    except NoRoute:
        return problems.problem(problems.ROUTE_NOT_FOUND, request_id)
    except MethodNotAllowed as exc:
        allow = Headers([("allow", ", ".join(exc.allowed))])
        return problems.problem(problems.METHOD_NOT_ALLOWED, request_id, headers=allow)

    body = request.body
    if route is None:
        assert builtin is not None
        body.limit = builtin.max_body_size
        request.endpoint = builtin
        upstream_path = path
    else:
        request.route = route
        body.limit = route.max_body_size
        upstream_path = route.upstream_path(path, params, "%" in raw)

    # Made only now: a request refused above never needed one.
    transport = peer.transport
    exchange = Exchange(
        method=request.method,
        path=path,
        raw_path=raw,
        query=query,
        headers=headers,
        http_version=request.version,
        scheme=scheme,
        host=host,
        client_ip=client_ip,
        peer_ip=peer.ip,
        request_id=request_id,
        route=route,
        path_params=params,
        upstream_path=upstream_path,
        tls=transport.get_extra_info("ssl_object") if peer.tls and transport else None,
    )
    if route is None:
        # A body that arrived whole before the endpoint's limit was known is refused here too.
        too_large = _body_refusal(request, request_id)
        return exchange if too_large is None else too_large
    refusal = _route_refusal(request, route, request_id)
    if refusal is not None:
        # The route's response hooks see the refusal too (its CORS or deprecation fields).
        request.exchange = exchange
    return exchange if refusal is None else refusal


def _body_refusal(request: Request, request_id: str) -> Reply | None:
    """A body over the limit of what serves it (declared, or already received while the
    connection's wider limit applied)."""
    body = request.body
    declared = request.special.get("content-length")
    if (
        body.overflow
        or body.received > body.limit
        or (declared is not None and declared.isdigit() and int(declared) > body.limit)
    ):
        body.overflow = True
        return problems.too_large(request_id, body.limit)
    return None


def _route_refusal(request: Request, route: CompiledRoute, request_id: str) -> Reply | None:
    """What a route refuses before its policies run: a body over its limit, an upgrade it does
    not relay."""
    too_large = _body_refusal(request, request_id)
    if too_large is not None:
        return too_large
    special = request.special
    if request.upgrade and (
        not route.websocket
        or request.method != "GET"
        or special.get("upgrade", "").strip().lower() != "websocket"
    ):
        # Only WebSocket is relayed: h2c and other protocols would reach the upstream past
        # every policy of the routes behind this one.
        return problems.problem(problems.UPGRADE_NOT_ALLOWED, request_id)
    return None


def _preflight_route(
    runtime: Runtime, host: str, path: str, headers: Headers
) -> tuple[CompiledRoute, dict[str, str]] | None:
    """The route a CORS preflight asks about, when that route answers preflights itself.

    A preflight (Fetch standard, "CORS-preflight request": ``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) asks whether the request it announces may be sent, so it
    is routed as that request: by the requested method, not by ``OPTIONS``, which the route need
    not list. Anything else (no such route, a route without a preflight policy, a built-in
    endpoint's path) is routed as the ``OPTIONS`` request it is."""
    requested = headers.get("access-control-request-method")
    if not requested or "origin" not in headers:
        return None
    endpoints = runtime.endpoints
    try:
        if endpoints is not None and endpoints.find(requested, host, path, headers) is not None:
            return None
        found = runtime.router.find(requested, host, path, headers)
    except MethodNotAllowed:
        return None
    if found is None or found[0].preflight is None:
        return None
    return found


def _asterisk(request: Request, request_id: str) -> Reply:
    """``OPTIONS *`` asks about the server itself (RFC 9110 §9.3.7): Portico answers what it
    relays. The asterisk form is valid for nothing else (RFC 9112 §3.2.4)."""
    if request.method != "OPTIONS":
        return problems.problem(problems.BAD_REQUEST, request_id)
    return Reply(200, Headers([("allow", _ALLOW_ANY)]))
