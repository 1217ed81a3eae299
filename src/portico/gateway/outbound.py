"""The head of the request as it goes upstream: which of the client's fields travel, and what
Portico adds (the request id, the trace context, the caller's identity).

The hop-by-hop and forwarding rules are in :mod:`portico.gateway.forwarding`; this module puts
them together with the exchange, once the route's policies have run.
"""

from __future__ import annotations

import re

from portico.gateway.exchange import Exchange, Identity
from portico.gateway.forwarding import upstream_headers
from portico.gateway.http import new_id

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACE_ID = re.compile(r"^(?!0{32})[0-9a-f]{32}$")


def scope_text(scopes: frozenset[str]) -> str:
    """The X-Portico-Scopes value."""
    return " ".join(sorted(scopes))


def identity_fields(identity: Identity) -> str:
    """The ``X-Portico-*`` field lines of ``identity``, rendered on its first request and kept
    on it: an authenticator hands one identity to every request of a credential."""
    text = identity.fields
    if not text:
        tenant = f"x-portico-tenant: {identity.tenant}\r\n" if identity.tenant else ""
        text = identity.fields = (
            f"x-portico-consumer: {identity.consumer}\r\n{tenant}"
            f"x-portico-scopes: {scope_text(identity.scopes)}\r\n"
            f"x-portico-auth-method: {identity.method}\r\n"
        )
    return text


def outbound_fields(
    exchange: Exchange,
    special: dict[str, str],
    *,
    peer_ip: str,
    peer_trusted: bool,
    request_id_header: str,
    replaced: frozenset[str],
    chunked: bool,
    upgrade: bool,
    traced: bool = False,
) -> str:
    """The field lines sent upstream after Host (which depends on the target), and the empty
    line that ends the head.

    ``special`` holds the fields the parser picked out of the client's head (``host``,
    ``traceparent``, the request id field); ``replaced`` are those Portico always sets itself.
    ``upgrade``: the request is a WebSocket handshake the route relays. ``traced``: the
    exchange has a span, and each attempt sends the ``traceparent`` of its own span instead.
    """
    fields = upstream_headers(
        exchange.headers.items,
        peer_ip=peer_ip,
        peer_trusted=peer_trusted,
        scheme=exchange.scheme,
        host_header=special.get("host", ""),  # validated: no quote or backslash
        upgrade="websocket" if upgrade else None,
        replaced=replaced,
    )
    parts: list[str] = []
    for name, value in fields:
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
    parts.append(request_id_header)
    parts.append(": ")
    parts.append(exchange.request_id)
    parts.append("\r\n")
    if not traced:
        parts.append("traceparent: ")
        parts.append(
            traceparent(
                special.get("traceparent"),
                exchange.request_id,
                generated_id=request_id_header not in special,
            )
        )
        parts.append("\r\n")
    identity = exchange.identity
    if identity is not None:
        parts.append(identity_fields(identity))
    parts.append("transfer-encoding: chunked\r\n\r\n" if chunked else "\r\n")
    return "".join(parts)


def traceparent(incoming: str | None, request_id: str, generated_id: bool = False) -> str:
    """W3C trace context: keep the caller's trace id and flags, with Portico's own span id.

    A new trace reuses a generated request id (32 hex digits) as its trace id, so logs and
    traces of one request share one identifier.
    """
    if incoming:
        m = _TRACEPARENT.match(incoming.strip())
        if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
            return f"00-{m.group(1)}-{new_id(8)}-{m.group(3)}"
    return "00-" + trace_id_for(request_id, generated_id) + "-" + new_id(8) + "-01"


def trace_id_for(request_id: str, generated_id: bool) -> str:
    """The trace id of a new trace: the request id when it is one (32 hex digits, as Portico
    generates them), else a new one."""
    return request_id if generated_id or _TRACE_ID.match(request_id) else new_id(16)
