"""The ``cors`` policy at request time: the Fetch standard's CORS protocol, answered the way a
browser checks it (docs/cors.md).

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  here, by :meth:`Cors.on_preflight`, before any other policy runs: 204 with the
  ``Access-Control-Allow-*`` fields when the origin, the method and every requested header field
  are allowed, else 403 ``cors-preflight-refused`` without any CORS field, so the browser stops.
- Every other response of the route, Portico's own errors included, gets
  ``Access-Control-Allow-Origin`` (and ``-Credentials``, ``-Expose-Headers``) when its request
  came from an allowed origin, and ``Vary: Origin`` whenever the answer depends on the origin.
  The upstream's own ``Access-Control-*`` fields are dropped: the route's policy is the one
  answer (two ``Access-Control-Allow-Origin`` fields fail a browser's check anyway).

Compiled with mypyc (``[tool.portico.native]``): the settings are copied into sets, strings and
compiled patterns when the snapshot is built.
"""

from __future__ import annotations

import re

from portico.core.http import HTTP_METHODS
from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.context import BuildContext
from portico.policies.cors.settings import ANY, PORTICO_FIELDS, CorsSettings

__all__ = ["Cors", "build"]

PREFLIGHT_REFUSED = problems.CORS_PREFLIGHT_REFUSED
_PREFIX = "access-control-"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def origin_pattern(pattern: str) -> re.Pattern[str]:
    """``https://*.example.com[:port]`` as an anchored expression: one or more whole labels in
    place of ``*``, the rest literal (so ``https://example.com.evil.net`` and
    ``https://evilexample.com`` never match)."""
    scheme, _, host = pattern.partition("://*.")
    return re.compile(re.escape(scheme) + "://(?:" + _LABEL + r"\.)+" + re.escape(host))


class Cors:
    __slots__ = (
        "_allow_headers",
        "_allow_methods",
        "_any_header",
        "_any_method",
        "_any_origin",
        "_credentials",
        "_expose",
        "_headers",
        "_max_age",
        "_methods",
        "_origins",
        "_patterns",
        "_static",
        "needs_body",
    )

    def __init__(self, settings: CorsSettings, request_id_header: str) -> None:
        self.needs_body = False
        self._any_origin = settings.origins == (ANY,)
        self._origins = frozenset(o for o in settings.origins if "://*." not in o)
        self._patterns = tuple(origin_pattern(o) for o in settings.origins if "://*." in o)
        self._credentials = settings.credentials
        # Any origin without credentials: the answer is the same for every request, so it
        # needs no Vary and a cache may keep one copy.
        self._static = self._any_origin and not settings.credentials
        self._any_method = settings.methods == (ANY,)
        self._methods = frozenset(settings.methods)
        self._allow_methods = ", ".join(settings.methods)
        self._any_header = settings.headers == (ANY,)
        self._headers = frozenset(settings.headers)
        self._allow_headers = ", ".join(settings.headers)
        exposed = settings.expose_headers
        if exposed is None:
            exposed = (*PORTICO_FIELDS, request_id_header)
        self._expose = ", ".join(exposed)
        self._max_age = "" if settings.max_age is None else str(settings.max_age)

    def allowed_origin(self, headers: Headers) -> str | None:
        """The request's origin when it is allowed. A request with two ``Origin`` fields is
        from no browser, and matches nothing."""
        values = headers.get_all("origin")
        if len(values) != 1:
            return None
        origin = values[0]
        if self._any_origin or origin in self._origins:
            return origin
        for pattern in self._patterns:
            if pattern.fullmatch(origin) is not None:
                return origin
        return None

    def on_request(self, exchange: Exchange) -> Reply | None:
        # A disallowed origin's request still goes through: CORS decides what a browser lets a
        # script read, not who may call (that is `auth`); a browser sends simple requests anyway.
        return None

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        if any(name.startswith(_PREFIX) for name, _ in headers.items):
            headers.items = [(k, v) for k, v in headers.items if not k.startswith(_PREFIX)]
        if self._static:
            headers.add("access-control-allow-origin", "*")
            if self._expose:
                headers.add("access-control-expose-headers", self._expose)
            return
        vary_on_origin(headers)
        origin = self.allowed_origin(exchange.headers)
        if origin is None:
            return
        headers.add("access-control-allow-origin", origin)
        if self._credentials:
            headers.add("access-control-allow-credentials", "true")
        if self._expose:
            headers.add("access-control-expose-headers", self._expose)

    def on_preflight(self, exchange: Exchange) -> Reply:
        request = exchange.headers
        request_id = exchange.request_id
        origin = self.allowed_origin(request)
        if origin is None:
            return problems.problem(PREFLIGHT_REFUSED, request_id, "the origin is not allowed")
        method = request.get("access-control-request-method") or ""
        if not self._any_method and method not in self._methods:
            detail = "the method is not allowed from another origin"
            if method in HTTP_METHODS:
                detail = f"the method {method} is not allowed from another origin"
            return problems.problem(PREFLIGHT_REFUSED, request_id, detail)
        asked = requested_fields(request)
        if asked is None:
            detail = "Access-Control-Request-Headers is not a list of field names"
            return problems.problem(PREFLIGHT_REFUSED, request_id, detail)
        if not self._any_header:
            for name in asked:
                if name not in self._headers:
                    detail = f"the header field {name} is not allowed from another origin"
                    return problems.problem(PREFLIGHT_REFUSED, request_id, detail)
        out = Headers()
        out.add("access-control-allow-origin", "*" if self._static else origin)
        if self._credentials:
            out.add("access-control-allow-credentials", "true")
        # A wildcard setting answers with what was asked: a browser reads '*' literally on a
        # request with credentials, and never lets '*' cover Authorization.
        out.add("access-control-allow-methods", method if self._any_method else self._allow_methods)
        if asked:
            allow = ", ".join(asked) if self._any_header else self._allow_headers
            out.add("access-control-allow-headers", allow)
        if self._max_age:
            out.add("access-control-max-age", self._max_age)
        out.add("vary", _PREFLIGHT_VARY)
        return Reply(204, out)


def requested_fields(headers: Headers) -> list[str] | None:
    """The field names of ``Access-Control-Request-Headers``, lower case, in order; ``None``
    when it holds anything but field names."""
    names: list[str] = []
    for value in headers.get_all("access-control-request-headers"):
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if _TOKEN.fullmatch(name) is None:
                return None
            names.append(name.lower())
    return names


def vary_on_origin(headers: Headers) -> None:
    """Add ``Origin`` to ``Vary`` unless the response already varies on it (or on everything)."""
    for name, value in headers.items:
        if name == "vary":
            for item in value.split(","):
                varies_on = item.strip().lower()
                if varies_on == "origin" or varies_on == "*":
                    return
    headers.add("vary", "Origin")


def build(settings: CorsSettings, context: BuildContext) -> Cors:
    return Cors(settings, context.config.gateway.request_id_header)
