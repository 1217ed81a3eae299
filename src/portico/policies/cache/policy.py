"""The ``cache`` policy at request time: answer GET and HEAD from stored responses
(docs/caching.md).

    policies:
      - type: cache
        ttl: 30s          # when the response says nothing itself
        scope: consumer   # consumer | tenant | public

Portico is a shared cache in the sense of RFC 9111. ``on_request`` looks the request's key up
and answers a fresh stored response with a :class:`~portico.gateway.exchange.Reply` (a HEAD is
answered from a stored GET); ``on_response`` decides from the upstream's head whether the
response may be stored, and ``on_response_body`` stores it once the body is whole (a body over
``max_body_size`` streams through unstored). Every response of the route says what happened in
``Cache-Status`` (RFC 9211). The in-process state answers at once (no task is scheduled for a
lookup); Redis is awaited, within ``redis.timeout``; writes never hold a response back.
"""

from __future__ import annotations

import asyncio
import time

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.policy import Outcome
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.cache.control import (
    Directives,
    directives,
    freshness,
    initial_age,
    seconds,
    vary_names,
)
from portico.policies.cache.entry import StoredResponse, decode, encode, encode_vary
from portico.policies.cache.key import (
    invalidation,
    invalidation_of,
    primary,
    route_prefix,
    scope_of,
    variant,
)
from portico.policies.cache.settings import CacheSettings
from portico.shared.failures import StateFailures, unavailable
from portico.shared.state import SharedState, SharedStateUnavailable

__all__ = ["ResponseCache", "build"]

_STATE = "cache"
"""The exchange's scratch entry of this policy."""

_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""RFC 9110 §9.2.1. A response to any other method that is not an error makes what is stored
for its path stale (RFC 9111 §4.4: unknown methods count as unsafe)."""
_MARKER_TTL = 366 * 86400.0
"""How long an invalidation is kept without ``max_ttl``: longer than any response is stored,
short of a year's ``max-age``."""

_CONDITIONAL = ("if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "range")
"""Requests the origin must evaluate (a stored 200 is not their answer): looked up never."""

_NOT_STORED = frozenset(
    {
        "age",
        "cache-status",
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Fields of a response that belong to one transfer, not to the stored response."""


class Pending:
    """A response ``on_response`` found storable, waiting for its body."""

    __slots__ = ("headers", "lifetime", "shared", "status", "stored_at", "vary")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        stored_at: float,
        lifetime: float,
        shared: bool,
        vary: tuple[str, ...],
    ) -> None:
        self.status = status
        self.headers = headers
        self.stored_at = stored_at
        self.lifetime = lifetime
        self.shared = shared
        self.vary = vary


class Lookup:
    """What the policy knows of one request, from ``on_request`` to the response body."""

    __slots__ = ("credentialed", "detail", "fwd", "invalidation", "key", "pending", "store")

    def __init__(self, key: str, invalidation: str, credentialed: bool, store: bool) -> None:
        self.key = key
        self.invalidation = invalidation
        """The key of the path's last invalidation."""
        self.credentialed = credentialed
        """It carries credentials Portico did not check (``Authorization`` or ``Cookie`` and no
        identity): RFC 9111 §3.5 applies."""
        self.store = store
        """The request allows its response to be stored (no ``no-store``)."""
        self.fwd = "miss"
        """RFC 9211's ``fwd``: why it went upstream (``miss``, ``stale``, ``request``,
        ``bypass``), or ``hit``."""
        self.detail = ""
        self.pending: Pending | None = None


class ResponseCache:
    __slots__ = (
        "_failures",
        "_key_headers",
        "_lookups",
        "_max_ttl",
        "_route",
        "_route_start",
        "_scope",
        "_shared",
        "_statuses",
        "_stores",
        "_tasks",
        "_ttl",
        "needs_body",
        "response_body_limit",
    )

    def __init__(
        self,
        settings: CacheSettings,
        route: str,
        shared: SharedState,
        lookups: LabelledCounter,
        stores: LabelledCounter,
        failures: StateFailures,
    ) -> None:
        self.needs_body = False
        self.response_body_limit = settings.max_body_size
        self._route = route
        self._route_start = route_prefix(route)
        self._shared = shared
        self._lookups = lookups
        self._stores = stores
        self._ttl = settings.ttl
        self._max_ttl = settings.max_ttl
        self._scope = settings.scope
        self._statuses = frozenset(settings.statuses)
        self._key_headers = tuple(name.lower() for name in settings.key_headers)
        self._failures = failures
        self._tasks: set[asyncio.Task[None]] = set()
        """Writes under way: held so that the loop does not drop them half done."""

    # -- the request ---------------------------------------------------------------------------

    def on_request(self, exchange: Exchange) -> Outcome:
        method = exchange.method
        if method != "GET" and method != "HEAD":
            return None  # an unsafe one invalidates the path once answered (on_response)
        headers = exchange.headers
        credentialed = exchange.identity is None and (
            "authorization" in headers or "cookie" in headers
        )
        request = directives(headers)
        key = primary(
            self._route_start, exchange, scope_of(exchange, self._scope), self._key_headers
        )
        marker = invalidation_of(key)
        state = Lookup(key, marker, credentialed, "no-store" not in request)
        exchange.state[_STATE] = state
        if _refuses_stored(request, headers):
            state.fwd = "request"
            self._lookups.inc((self._route, "bypass"))
            return _not_cached(exchange, request)
        for name in _CONDITIONAL:
            if name in headers:
                state.fwd = "bypass"
                self._lookups.inc((self._route, "bypass"))
                return _not_cached(exchange, request)
        shared = self._shared
        if not shared.local:
            return self._lookup(exchange, state, request)
        found = _decoded(shared.get_now(key))
        if isinstance(found, tuple):
            found = _decoded(shared.get_now(variant(key, headers, found)))
        return self._answer(exchange, state, request, found, shared.get_now(marker))

    async def _lookup(self, exchange: Exchange, state: Lookup, request: Directives) -> Reply | None:
        shared = self._shared
        try:
            # The entry and the path's invalidation in one round trip.
            value, marker = await shared.get_many([state.key, state.invalidation])
            found = _decoded(value)
            if isinstance(found, tuple):
                found = _decoded(await shared.get(variant(state.key, exchange.headers, found)))
        except SharedStateUnavailable as exc:
            self._failures.failed(exc)
            if self._failures.fails_closed:
                exchange.state.pop(_STATE, None)
                return unavailable(exchange.request_id)
            state.store = False  # it would fail too, and hold a connection of the pool meanwhile
            state.detail = "shared-state-unavailable"
            self._lookups.inc((self._route, "miss"))
            return _not_cached(exchange, request)
        return self._answer(exchange, state, request, found, marker)

    def _answer(
        self,
        exchange: Exchange,
        state: Lookup,
        request: Directives,
        found: StoredResponse | tuple[str, ...] | None,
        marker: bytes | None,
    ) -> Reply | None:
        if not isinstance(found, StoredResponse) or (state.credentialed and not found.shared):
            self._lookups.inc((self._route, "miss"))
            return _not_cached(exchange, request)
        if marker is not None and found.stored_at <= _invalidated_at(marker):
            state.detail = "invalidated"  # an unsafe request changed the resource since
            self._lookups.inc((self._route, "miss"))
            return _not_cached(exchange, request)
        age = max(0.0, time.time() - found.stored_at)
        remaining = found.lifetime - age
        if remaining <= 0:
            state.fwd = "stale"
            self._lookups.inc((self._route, "miss"))
            return _not_cached(exchange, request)
        if ("max-age" in request and age > seconds(request["max-age"])) or (
            "min-fresh" in request and remaining < seconds(request["min-fresh"])
        ):
            state.fwd = "request"
            self._lookups.inc((self._route, "bypass"))
            return _not_cached(exchange, request)
        state.fwd = "hit"
        self._lookups.inc((self._route, "hit"))
        headers = Headers(found.headers)
        headers.set("age", str(int(age)))
        headers.add("cache-status", f"Portico; hit; ttl={int(remaining)}")
        return Reply(found.status, headers, found.body)

    # -- the response --------------------------------------------------------------------------

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        if exchange.method not in _SAFE:
            if 200 <= status < 400:
                self._invalidate(exchange)
            return
        state = exchange.state.get(_STATE)
        if not isinstance(state, Lookup) or state.fwd == "hit":
            return
        pending = self._storable(exchange, state, status, headers)
        if pending is None:
            headers.add("cache-status", _status(state, ""))
            return
        if status == 204:  # no body hook sees it: it is whole now
            self._store(state, exchange.headers, pending, b"")
            headers.add("cache-status", _status(state, "stored"))
            return
        state.pending = pending  # stored with its body (on_response_body)

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        state = exchange.state.get(_STATE)
        if not isinstance(state, Lookup):
            return None
        pending = state.pending
        if pending is None:
            return None
        state.pending = None
        coding = headers.get("transfer-encoding")
        if body is None or (coding is not None and coding.strip().lower() != "chunked"):
            # Over the limit (it streams through), or in a transfer coding it would be stored in.
            state.detail = "too-large" if body is None else "transfer-coding"
            headers.add("cache-status", _status(state, ""))
            return None
        self._store(state, exchange.headers, pending, body)
        headers.add("cache-status", _status(state, "stored"))
        return None

    def _storable(
        self, exchange: Exchange, state: Lookup, status: int, headers: Headers
    ) -> Pending | None:
        """What to store of this response, or ``None`` when it may not be stored."""
        if exchange.method != "GET" or not state.store or status not in self._statuses:
            return None
        response = directives(headers)
        if "no-store" in response or "private" in response or "no-cache" in response:
            return None
        if "set-cookie" in headers:
            return None  # one client's session must never reach another
        vary = vary_names(headers)
        if vary is None:
            return None
        shared = "public" in response or "s-maxage" in response or "must-revalidate" in response
        if state.credentialed and not shared:
            return None  # RFC 9111 §3.5: another caller's credentials may have shaped it
        lifetime = freshness(response, headers, self._ttl, self._max_ttl)
        age = initial_age(headers)
        if age < 0 or lifetime - age <= 0:
            return None
        hop = _connection_tokens(headers)
        kept = [
            (name, value)
            for name, value in headers.items
            if name.lower() not in _NOT_STORED and name.lower() not in hop
        ]
        return Pending(status, kept, time.time() - age, lifetime, shared, vary)

    # -- writing -------------------------------------------------------------------------------

    def _store(self, state: Lookup, request: Headers, pending: Pending, body: bytes) -> None:
        entry = encode(
            StoredResponse(
                pending.status,
                pending.headers,
                body,
                pending.stored_at,
                pending.lifetime,
                pending.shared,
            )
        )
        ttl = pending.lifetime - (time.time() - pending.stored_at)
        writes: list[tuple[str, bytes]]
        if pending.vary:
            # The names first under the request's key; the response under its variant's.
            writes = [
                (variant(state.key, request, pending.vary), entry),
                (state.key, encode_vary(pending.vary)),
            ]
        else:
            writes = [(state.key, entry)]
        task = asyncio.get_running_loop().create_task(self._write(writes, ttl))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _invalidate(self, exchange: Exchange) -> None:
        """What is stored for the path is stale from now: every query, consumer and variant
        (RFC 9111 §4.4)."""
        marker = invalidation(self._route_start, exchange.path)
        now = repr(time.time()).encode()
        ttl = self._max_ttl if self._max_ttl is not None else _MARKER_TTL
        task = asyncio.get_running_loop().create_task(self._write([(marker, now)], ttl, False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, writes: list[tuple[str, bytes]], ttl: float, count: bool = True) -> None:
        try:
            for key, value in writes:
                await self._shared.set(key, value, ttl)
        except SharedStateUnavailable as exc:
            self._failures.failed(exc)
            return
        if count:
            self._stores.inc((self._route,))


def _not_cached(exchange: Exchange, request: Directives) -> Reply | None:
    """``None`` (go upstream), or the 504 a request with ``only-if-cached`` gets instead
    (RFC 9111 §5.2.1.7): it asked for a stored response only."""
    if "only-if-cached" not in request:
        return None
    exchange.state.pop(_STATE, None)  # nothing to store or report: the upstream is not asked
    return problems.problem(
        problems.NOT_CACHED,
        exchange.request_id,
        "no fresh stored response answers this request (only-if-cached)",
    )


def _invalidated_at(marker: bytes) -> float:
    try:
        return float(marker)
    except ValueError:  # not Portico's: as if the path had just changed
        return time.time()


def _decoded(value: bytes | None) -> StoredResponse | tuple[str, ...] | None:
    return decode(value) if value else None


def _refuses_stored(request: Directives, headers: Headers) -> bool:
    """The request asks for a response from the origin (RFC 9111 §5.2.1.4, §5.4)."""
    if "no-cache" in request:
        return True
    if "max-age" in request and seconds(request["max-age"]) == 0:
        return True
    if not request and "pragma" in headers:
        return any("no-cache" in v.lower() for v in headers.get_all("pragma"))
    return False


def _connection_tokens(headers: Headers) -> frozenset[str]:
    values = headers.get_all("connection")
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _status(state: Lookup, stored: str) -> str:
    """The ``Cache-Status`` of a response that went upstream."""
    text = "Portico; fwd=" + state.fwd
    if stored:
        text += "; " + stored
    if state.detail:
        text += "; detail=" + state.detail
    return text


def build(settings: CacheSettings, context: BuildContext) -> ResponseCache:
    stats = context.extensions.stats
    route = context.route_name
    lookups = stats.counter(
        "portico_cache_lookups",
        "Requests a route's cache policy handled, by result: hit (answered from the cache), "
        "miss (forwarded), bypass (forwarded without a lookup: the request forbade it).",
        ("route", "result"),
    )
    stores = stats.counter(
        "portico_cache_stores", "Responses a route's cache policy stored.", ("route",)
    )
    failures = StateFailures("cache", route, stats, settings.on_redis_failure)
    return ResponseCache(settings, route, context.extensions.shared, lookups, stores, failures)
