"""What policies see of one request: the :class:`Exchange`, and the :class:`Reply` they may answer.

An exchange is created by the server for each request after the head is parsed and before anything
is sent upstream. Policies read and change it (headers, the upstream path, identity) and may answer
early with a :class:`Reply` instead of letting the request through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portico.gateway.headers import Headers

if TYPE_CHECKING:
    from portico.gateway.snapshot import CompiledRoute


# Plain classes with written-out constructors rather than dataclasses: this module is compiled
# with mypyc, which leaves a dataclass's generated ``__init__`` interpreted (an Exchange is built
# for every request).


class Identity:
    """Who is calling, set by an authentication policy and forwarded to the upstream.

    Read-only once made: an authenticator hands the same identity to every request of one
    credential (an API key's is made once), and the fields it sends upstream are rendered once
    (:func:`portico.gateway.outbound.identity_fields`)."""

    __slots__ = ("claims", "consumer", "fields", "method", "scopes", "tenant")

    def __init__(
        self,
        consumer: str,
        tenant: str | None = None,
        scopes: frozenset[str] = frozenset(),
        method: str = "",
        claims: dict[str, Any] | None = None,
    ) -> None:
        self.consumer = consumer
        self.tenant = tenant
        self.scopes = scopes
        self.method = method
        self.claims: dict[str, Any] = {} if claims is None else claims
        self.fields = ""
        """The ``X-Portico-*`` field lines sent upstream, once rendered (empty until then)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return (self.consumer, self.tenant, self.scopes, self.method, self.claims) == (
            other.consumer,
            other.tenant,
            other.scopes,
            other.method,
            other.claims,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Identity(consumer={self.consumer!r}, tenant={self.tenant!r}, "
            f"scopes={sorted(self.scopes)!r}, method={self.method!r})"
        )


class Exchange:
    __slots__ = (
        "_response_headers",
        "_state",
        "body",
        "client_ip",
        "headers",
        "host",
        "http_version",
        "identity",
        "method",
        "path",
        "path_params",
        "peer_ip",
        "query",
        "raw_path",
        "request_id",
        "route",
        "scheme",
        "tls",
        "upstream_path",
    )

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        http_version: str,
        scheme: str,
        host: str,
        client_ip: str,
        peer_ip: str,
        request_id: str,
        route: CompiledRoute | None,
        path_params: dict[str, str],
        upstream_path: str,
        identity: Identity | None = None,
        tls: Any = None,
        body: bytes | None = None,
        raw_path: str | None = None,
    ) -> None:
        self.method = method
        self.path = path
        """The path routes matched: decoded once, dot segments removed, without the query (see
        ``docs/security.md``). Compare paths with this one, never with ``raw_path``."""
        self.raw_path = path if raw_path is None else raw_path
        """The path exactly as the client sent it, for what must check the client's own bytes
        (an HTTP message signature's ``@path``)."""
        self.query = query
        """The raw query string without ``?``; empty when there is none."""
        self.headers = headers
        self.http_version = http_version
        self.scheme = scheme
        """``http`` or ``https``: how the client reached Portico (or the trusted proxy in front)."""
        self.host = host
        """The Host the client asked for, lower-cased, without the port."""
        self.client_ip = client_ip
        """The client address, resolved through the trusted-proxies list."""
        self.peer_ip = peer_ip
        """The address of the TCP peer (the client, or the last proxy)."""
        self.request_id = request_id
        self.route = route
        """The matched route; ``None`` only for Portico's built-in endpoints."""
        self.path_params = path_params
        self.upstream_path = upstream_path
        """The path (and query) that will be sent upstream; policies may rewrite it."""
        self.identity = identity
        self.tls = tls
        """The ``ssl.SSLObject`` for HTTPS connections, giving access to the client certificate."""
        self.body = body
        """The whole request body, read before the pipeline runs, when a policy of the route has
        ``needs_body = True`` (signature digests, for example). ``None`` when the body streams."""
        self._response_headers: Headers | None = None
        self._state: dict[str, Any] | None = None

    @property
    def response_headers(self) -> Headers:
        """Extra fields added to the response the client gets (rate-limit headers, for example).

        Made on first use: most requests add none."""
        headers = self._response_headers
        if headers is None:
            headers = self._response_headers = Headers()
        return headers

    @property
    def extra_response_headers(self) -> list[tuple[str, str]]:
        """The fields added so far, without making an empty list for a request that has none."""
        headers = self._response_headers
        return headers.items if headers is not None else []

    @property
    def state(self) -> dict[str, Any]:
        """Scratch space shared by the policies of one request."""
        state = self._state
        if state is None:
            state = self._state = {}
        return state


class Reply:
    """A complete response produced by Portico itself (a policy or the gateway)."""

    __slots__ = ("body", "headers", "problem", "status")

    def __init__(self, status: int, headers: Headers, body: bytes = b"", problem: str = "") -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.problem = problem
        """The problem ``type`` URI when this is one of Portico's problem answers, else empty."""

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, headers={self.headers!r}, body={self.body!r})"
