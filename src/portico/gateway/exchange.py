"""What policies see of one request: the :class:`Exchange`, and the :class:`Reply` they may answer.

An exchange is created by the server for each request after the head is parsed and before anything
is sent upstream. Policies read and change it (headers, the upstream path, identity) and may answer
early with a :class:`Reply` instead of letting the request through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portico.gateway.headers import Headers

if TYPE_CHECKING:
    from portico.runtime import CompiledRoute


@dataclass(slots=True)
class Identity:
    """Who is calling, set by an authentication policy and forwarded to the upstream."""

    consumer: str
    tenant: str | None = None
    scopes: frozenset[str] = frozenset()
    method: str = ""
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Exchange:
    method: str
    path: str
    """The request path as received, percent-encoding intact, without the query."""
    query: str
    """The raw query string without ``?``; empty when there is none."""
    headers: Headers
    http_version: str
    scheme: str
    """``http`` or ``https``: how the client reached Portico (or the trusted proxy in front)."""
    host: str
    """The Host the client asked for, lower-cased, without the port."""
    client_ip: str
    """The client address, resolved through the trusted-proxies list."""
    peer_ip: str
    """The address of the TCP peer (the client, or the last proxy)."""
    request_id: str
    route: CompiledRoute | None
    """The matched route; ``None`` only for Portico's built-in endpoints."""
    path_params: dict[str, str]
    upstream_path: str
    """The path (and query) that will be sent upstream; policies may rewrite it."""
    identity: Identity | None = None
    tls: Any = None
    """The ``ssl.SSLObject`` for HTTPS connections, giving access to the client certificate."""
    body: bytes | None = None
    """The whole request body, read before the pipeline runs, when a policy of the route has
    ``needs_body = True`` (signature digests, for example). ``None`` when the body streams."""
    response_headers: Headers = field(default_factory=Headers)
    """Extra fields added to the response the client gets (rate-limit headers, for example)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space shared by the policies of one request."""


@dataclass(slots=True)
class Reply:
    """A complete response produced by Portico itself (a policy or the gateway)."""

    status: int
    headers: Headers
    body: bytes = b""
