"""``Cache-Control`` (RFC 9111 §5.2), ``Expires`` and ``Vary`` as a shared cache reads them.

Written out rather than taken from a library: the grammar is a comma-separated list of
``name[=token-or-quoted-string]``, and what matters is how a cache acts on doubtful input, which
here is always the conservative way (a doubled ``max-age`` counts its smaller value, one that is
not a number makes the response stale).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

from portico.gateway.headers import Headers

__all__ = ["Directives", "directives", "freshness", "initial_age", "seconds", "vary_names"]

Directives = dict[str, str]
"""Directive name (lower-cased) -> its value (``""`` when it has none)."""

_NOT_A_NUMBER = -1


def directives(headers: Headers) -> Directives:
    """The ``Cache-Control`` directives of every ``Cache-Control`` field of ``headers``."""
    fields = headers.get_all("cache-control")
    out: Directives = {}
    if not fields:
        return out
    for item in _split_list(", ".join(fields)):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        value = value.strip()
        if sep and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if name in out and name in ("max-age", "s-maxage", "min-fresh"):
            # Said twice (RFC 9111 §4.2.1 calls it invalid): the smaller lifetime wins.
            value = str(min(seconds(out[name]), seconds(value)))
        out[name] = value
    return out


def seconds(value: str) -> int:
    """A delta-seconds value, or -1 when it is not one (then the response counts as stale)."""
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        return _NOT_A_NUMBER
    return min(int(value), 2**31)


def freshness(response: Directives, headers: Headers, default: float, limit: float | None) -> float:
    """How long a response stays fresh for a shared cache from its generation: ``s-maxage``,
    else ``max-age``, else ``Expires`` (minus ``Date``), else ``default``; at most ``limit``.
    Zero or less: it may not be stored."""
    lifetime: float
    if "s-maxage" in response:
        lifetime = float(seconds(response["s-maxage"]))
    elif "max-age" in response:
        lifetime = float(seconds(response["max-age"]))
    else:
        expires = headers.get("expires")
        lifetime = _expires_in(expires, headers.get("date")) if expires is not None else default
    if lifetime <= 0:
        return 0.0
    if limit is not None and lifetime > limit:
        lifetime = limit
    return lifetime


def initial_age(headers: Headers) -> int:
    """The ``Age`` a response arrives with (an upstream cache's), or -1 when it is not a number
    (then the response is not stored)."""
    value = headers.get("age")
    return 0 if value is None else seconds(value)


def vary_names(headers: Headers) -> tuple[str, ...] | None:
    """The request fields the response varies on, lower-cased and sorted; ``None`` for
    ``Vary: *`` (the response cannot be reused)."""
    names: set[str] = set()
    for field in headers.get_all("vary"):
        for item in field.split(","):
            name = item.strip().lower()
            if name == "*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


def _expires_in(expires: str, date: str | None) -> float:
    when = _http_date(expires)
    if when is None:
        return 0.0  # an invalid Expires (often "0") means already expired (RFC 9111 §5.3)
    now = _http_date(date) if date is not None else None
    return when - (now if now is not None else time.time())


def _http_date(text: str) -> float | None:
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _split_list(text: str) -> list[str]:
    """Split at commas outside quoted strings."""
    items: list[str] = []
    start = 0
    quoted = False
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items
