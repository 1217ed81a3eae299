"""The settings of the ``cors`` policy, validated when the config is loaded.

Origins are checked and put in the form a browser sends (the Fetch standard's serialization of
an origin: ``scheme://host[:port]``, lower case, the scheme's default port left out), so that
the request-time code (:mod:`.policy`, compiled with mypyc) compares strings exactly.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from portico.core.http import HTTP_METHODS

__all__ = ["ANY", "PORTICO_FIELDS", "CorsSettings", "normal_origin"]

ANY = "*"

PORTICO_FIELDS = ("RateLimit", "RateLimit-Policy", "Retry-After")
"""Response fields Portico itself may add that a browser script wants to read; the gateway's
request id field (``gateway.request_id_header``) is exposed with them by default."""

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]+\]$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def normal_origin(text: str) -> str:
    """``text`` as a browser serializes the origin (``HTTPS://Example.COM:443`` ->
    ``https://example.com``); a leading ``*.`` label is kept (a pattern). Raises ``ValueError``
    with the reason for anything that is not an origin."""
    if text == "null":
        raise ValueError(
            "'null' is the origin of sandboxed frames, data: URLs and local files: any page can "
            "make one, so it cannot be allowed"
        )
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme):
        raise ValueError(f"{text!r} is not an origin: write scheme://host[:port]")
    if any(c in rest for c in "/?#@\\ "):
        raise ValueError(
            f"{text!r} is not an origin: an origin is scheme://host[:port], without a path, "
            "a trailing '/', a query or user information"
        )
    host, port = rest.lower(), ""
    if not host.endswith("]") and ":" in host:  # a port (an IPv6 address ends in "]")
        host, _, port = host.rpartition(":")
        if not _PORT.match(port) or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} has an invalid port")
    name = host[2:] if host.startswith("*.") else host
    if "*" in name:
        raise ValueError(
            f"{text!r}: a pattern may only have '*.' at the start of the host "
            "(https://*.example.com)"
        )
    if not (_HOST.match(name) or (name == host and _IPV6.match(name))):
        raise ValueError(f"{text!r} does not have a valid host name")
    if name != host and name.count(".") < 1:
        raise ValueError(
            f"{text!r} would allow every site under a top-level domain: "
            "name at least two labels after '*.'"
        )
    if port and _DEFAULT_PORTS.get(scheme) == str(int(port)):
        port = ""
    return f"{scheme}://{host}:{int(port)}" if port else f"{scheme}://{host}"


class CorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    origins: tuple[str, ...] = Field(min_length=1)
    """``*`` (any origin), exact origins (``https://app.example.com``) or patterns with one
    leading wildcard label (``https://*.example.com``: a subdomain at any depth, never
    ``example.com`` itself)."""
    methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    """The methods a preflight may ask for; ``*``: any method the route serves."""
    headers: tuple[str, ...] = ()
    """Request header fields a preflight may ask for (beyond the CORS-safelisted ones a browser
    never asks about); ``*``: any."""
    expose_headers: tuple[str, ...] | None = None
    """Response fields a script may read besides the CORS-safelisted ones; by default Portico's
    own (``RateLimit``, ``RateLimit-Policy``, ``Retry-After`` and the request id field)."""
    credentials: bool = False
    """Allow cookies, HTTP authentication and client certificates on cross-origin requests."""
    max_age: int | None = Field(default=None, ge=0, le=86400)
    """How long, in seconds, a browser may keep a preflight's answer."""

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if ANY in value:
            if len(value) > 1:
                raise ValueError("'*' allows every origin: list no other next to it")
            return value
        return tuple(dict.fromkeys(normal_origin(origin) for origin in value))

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if ANY in value:
            if len(value) > 1:
                raise ValueError("'*' allows every method: list no other next to it")
            return value
        for method in value:
            if method not in HTTP_METHODS:
                known = ", ".join(sorted(HTTP_METHODS))
                raise ValueError(f"unknown method {method!r} (known: {known})")
        return tuple(dict.fromkeys(value))

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if ANY in value:
            if len(value) > 1:
                raise ValueError("'*' allows every header field: list no other next to it")
            return value
        return tuple(dict.fromkeys(name.lower() for name in _field_names(value)))

    @field_validator("expose_headers")
    @classmethod
    def _exposed(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None or value == (ANY,):
            return value
        if ANY in value:
            raise ValueError("'*' exposes every field: list no other next to it")
        return tuple(dict.fromkeys(_field_names(value)))

    @field_validator("credentials")
    @classmethod
    def _credentials(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        if info.data.get("origins") == (ANY,):
            raise ValueError(
                "credentials: true cannot be used with origins: ['*']: browsers refuse "
                "'Access-Control-Allow-Origin: *' on a request with credentials, and allowing "
                "every origin to send them would let any site act as the user; list the origins"
            )
        if ANY in (info.data.get("expose_headers") or ()):
            raise ValueError(
                "expose_headers: ['*'] means every field only without credentials (with them, "
                "browsers read it as a field named '*'); list the fields"
            )
        return value


def _field_names(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a header field name")
    return names
