"""The request's URI as the gateway decides on it: the canonical path, the Host, the absolute form.

The path rules (``docs/security.md``) exist so that the policy decision is made on the same path the
upstream interprets. A route is matched on the *decoded* path: percent-encodings are decoded once,
dot segments removed and empty segments merged. What cannot be decoded without changing the
path's shape, or what backends are known to read differently, is refused with 400:

- an encoded ``/`` (``%2F``), a backslash raw or encoded, NUL or another control character;
- a ``;`` raw or encoded (Tomcat and Spring drop ``;params`` from a segment, so
  ``/admin;x`` would reach ``/admin`` behind a route that does not match it);
- an encoding of ``%`` that hides a separator or a dot (``%252F``, ``%252e``): a backend that
  decodes twice would see another path;
- bytes that are not UTF-8 once decoded, and raw bytes outside ASCII.

The upstream receives the decoded path encoded again canonically, so a backend that decodes it
gets exactly the path the route was chosen by. A path without ``%`` goes upstream as it is,
dot segments and empty segments removed.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import unquote

_UNSAFE = re.compile(r"[^A-Za-z0-9/:@!$&'()*+,=._~-]+")
"""Runs of characters a path does not keep literally when encoded again (outside RFC 3986's
``pchar``, and ``;``)."""
_REFUSED_ESCAPE = re.compile(r"%(?:(?![0-9A-Fa-f]{2})|2[Ff]|5[Cc]|3[Bb]|[01][0-9A-Fa-f]|7[Ff])")
"""A ``%`` that starts no escape; encoded ``/``, ``\\``, ``;`` and control characters (raw ones
the parser refuses already)."""
_HIDDEN = re.compile(r"%(2[EeFf]|5[Cc]|3[Bb]|00)")
"""What a second decoding would turn into a separator or a dot."""
_HOST = re.compile(
    r"(?:\[([0-9A-Fa-f:.]+)\]|((?:[A-Za-z0-9_-]+\.)*[A-Za-z0-9_-]+\.?))(?::([0-9]{0,5}))?"
)


class BadTarget(Exception):
    """The request-target or Host cannot be served safely (400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_path(raw: str) -> str:
    """The decoded path routes are matched on (see the module docstring); raises
    :class:`BadTarget` for what is refused. ``raw`` is the path as received, latin-1 text."""
    if (
        "." not in raw
        and "//" not in raw
        and "%" not in raw
        and "\\" not in raw
        and ";" not in raw
        and raw.isascii()
    ):
        return raw
    if not raw.isascii():
        raise BadTarget("the path has bytes outside ASCII")
    if "\\" in raw:
        raise BadTarget("the path has a backslash")
    if ";" in raw:
        raise BadTarget("the path has a ';'")
    if "%" in raw:
        if _REFUSED_ESCAPE.search(raw) is not None:
            raise BadTarget(
                "the path encodes '/', '\\', ';' or a control character, or has a '%' that "
                "starts no escape"
            )
        try:
            decoded = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise BadTarget("the decoded path is not UTF-8") from None
        if "%" in decoded and _HIDDEN.search(decoded) is not None:
            raise BadTarget("the path hides a separator or a dot under a second encoding")
    else:
        decoded = raw
    return _remove_dot_segments(decoded)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, with empty segments merged (as nginx's ``merge_slashes``)."""
    if "." not in path and "//" not in path:
        return path
    raw = path.split("/")
    out: list[str] = []
    for segment in raw[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment == "." or segment == "":
            continue
        else:
            out.append(segment)
    trailing = "/" if raw[-1] in ("", ".", "..") and out else ""
    return "/" + "/".join(out) + trailing


def encode_path(path: str) -> str:
    """A decoded path as it goes upstream: every character outside ``pchar`` percent-encoded
    as UTF-8 with upper-case hex (what ``urllib.parse.quote`` gives, without its Python call
    per byte)."""
    return _UNSAFE.sub(_escape, path)


_HEX = tuple(f"%{byte:02X}" for byte in range(256))


def _escape(m: re.Match[str]) -> str:
    return "".join([_HEX[byte] for byte in m.group().encode()])


@functools.lru_cache(maxsize=1024)
def host_name(value: str) -> str | None:
    """The host a ``Host`` field (or an absolute-form authority) names: lower-cased, without
    port or trailing dot; ``None`` when it is not a valid host (RFC 3986 §3.2.2, reg-name
    narrowed to letters, digits, ``-``, ``_`` and dots, or an IP literal)."""
    m = _HOST.fullmatch(value)
    if m is None:
        return None
    literal, name, port = m.group(1), m.group(2), m.group(3)
    if port is not None and port and int(port) > 65535:
        return None
    if literal is not None:
        return literal.lower()
    assert name is not None
    return name.lower().rstrip(".")


def split_absolute(target: str) -> tuple[str, str, str]:
    """``(authority, path, query)`` of an absolute-form request-target (RFC 9112 §3.2.2).

    Only ``http`` and ``https`` are served; userinfo is refused (RFC 9110 §4.2.4); a fragment is
    dropped; an empty path is ``/``.
    """
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadTarget("an absolute target must be an http or https URI")
    end = len(rest)
    for mark in "/?#":
        at = rest.find(mark)
        if at != -1 and at < end:
            end = at
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        raise BadTarget("the target has userinfo")
    if not authority:
        raise BadTarget("the target has no host")
    rest = rest.partition("#")[0]
    path, _, query = rest.partition("?")
    return authority, path or "/", query
