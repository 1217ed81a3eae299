"""Cache keys: which requests share a stored response.

A key is ``cache:{route}:{path digest}:{rest digest}``: the route's name, the path the route
matched (decoded and canonical, ``exchange.path``: ``/a%2e`` and ``/a.`` are one resource because
the upstream receives them alike), then a digest of everything else that selects the response:

- the query, normalised (:func:`normal_query`);
- what the upstream sees of the origin: the scheme and the ``Host``, ``X-Forwarded-Host`` and
  ``Forwarded`` fields exactly as sent (a response that reflects them is never served for another
  spelling);
- the scope: the consumer, its tenant, or nobody on a ``public`` route;
- the route's ``key_headers``.

Responses that ``Vary`` are stored under that key plus a digest of the request's values of the
named fields. The route and path come first, in clear, so that a purge of a route or of a path is
a prefix; and so that an unsafe request (``POST``, ``PUT``, ``DELETE``...) that succeeds on a path
makes every stored response of that path stale with one key (:func:`invalidation`).
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

from portico.gateway.exchange import Exchange
from portico.gateway.headers import Headers

__all__ = [
    "KEY_PREFIX",
    "invalidation",
    "invalidation_of",
    "normal_query",
    "path_prefix",
    "route_prefix",
    "scope_of",
    "variant",
]

KEY_PREFIX = "cache:"
_SEP = "\x00"
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ORIGIN_FIELDS = ("host", "x-forwarded-host", "forwarded")


def route_prefix(route: str) -> str:
    """Every key of a route starts with this."""
    return KEY_PREFIX + quote(route, safe="") + ":"


def path_prefix(route: str, path: str) -> str:
    """Every key of one path of a route (any query, consumer or variant) starts with this."""
    return route_prefix(route) + _digest(path) + ":"


def invalidation(route_start: str, path: str) -> str:
    """Where the time of the last unsafe request that succeeded on ``path`` is kept: responses
    of the path stored before it are not served (RFC 9111 §4.4), whatever their query,
    consumer or variant. Its last part cannot be a digest's, so it is no response's key."""
    return route_start + _digest(path) + ":invalidated"


def invalidation_of(key: str) -> str:
    """:func:`invalidation` of the path a :func:`primary` key is for, without digesting the
    path again (the key is ``{route}:{path digest}:{rest digest}``)."""
    return key[: key.rfind(":") + 1] + "invalidated"


def primary(route_start: str, exchange: Exchange, scope: str, key_headers: tuple[str, ...]) -> str:
    """The key of a request's stored response (or of its variants' field names)."""
    headers = exchange.headers
    parts = [normal_query(exchange.query), exchange.scheme, scope]
    for name in _ORIGIN_FIELDS:
        parts.append(_field(headers, name))
    for name in key_headers:
        parts.append(_field(headers, name))
    return route_start + _digest(exchange.path) + ":" + _digest(_SEP.join(parts))


def variant(key: str, headers: Headers, names: tuple[str, ...]) -> str:
    """The key of the variant a request selects among responses that ``Vary`` on ``names``."""
    return key + ":" + _digest(_SEP.join(_field(headers, name) for name in names))


def scope_of(exchange: Exchange, scope: str) -> str:
    """Whose stored responses a request may see: ``c`` and the tenant and consumer, ``t`` and
    the tenant, ``p`` for everyone on a public route, ``a`` for anonymous callers."""
    if scope == "public":
        return "p"
    identity = exchange.identity
    if identity is None:
        return "a"
    tenant = identity.tenant or ""
    if scope == "tenant":
        return "t" + _SEP + tenant
    return "c" + _SEP + tenant + _SEP + identity.consumer


def normal_query(query: str) -> str:
    """The query as a key sees it (RFC 3986 §6.2.2, and order).

    Parameters are sorted by name, keeping the order of a repeated name (``a=2&a=1`` is not
    ``a=1&a=2`` to most frameworks); empty parameters (``&&``) are dropped; a percent-encoded
    unreserved character is decoded (``%61`` is ``a``) and other escapes are written in upper
    case. Nothing else is decoded: ``+`` stays ``+`` and ``%20`` stays ``%20``, since backends
    disagree on whether they are alike.
    """
    if not query:
        return ""
    params = [p for p in query.split("&") if p]
    if "%" in query:
        params = [_ESCAPE.sub(_normal_escape, p) for p in params]
    params.sort(key=_param_name)
    return "&".join(params)


def _param_name(param: str) -> str:
    return param.partition("=")[0]


def _normal_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _field(headers: Headers, name: str) -> str:
    values = headers.get_all(name)
    if not values:
        return "\x01"  # absent, unlike present and empty
    return ", ".join(v.strip() for v in values)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
