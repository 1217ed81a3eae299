"""The ``deprecation`` policy at request time: a deprecated route says so on every response,
and stops answering at its sunset (docs/deprecation.md).

    policies:
      - type: deprecation
        since: 2026-01-01
        sunset: 2026-07-01
        link: https://developer.example.com/migrate-to-v2

Every response of the route, Portico's own errors included, gets ``Deprecation: @<seconds>``
(RFC 9745, a Structured Field Date), ``Sunset: <HTTP-date>`` (RFC 8594) and ``Link`` fields to
the migration guide (``rel="deprecation"``) and the sunset notice (``rel="sunset"``): all
formatted once, when the snapshot is built. Past the sunset the route answers 410
``route-sunset``: a snapshot cannot know when that moment passes, so the clock is read on each
request (one ``time.time()``). ``retired: true`` (what a retired service's routes run,
docs/catalog.md) answers 410 at once. Calls are counted by route and consumer
(``portico_deprecated_requests_total``), so the owners know who still has to move.

Compiled with mypyc (``[tool.portico.native]``).
"""

from __future__ import annotations

import time
from email.utils import formatdate

from portico.gateway import problems
from portico.gateway.completion import Completion
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.deprecation.settings import DeprecationSettings

__all__ = ["CountedDeprecation", "Deprecation", "build"]


class Deprecation:
    __slots__ = (
        "_calls",
        "_fields",
        "_gone_detail",
        "_raw_fields",
        "_route",
        "_sunset",
        "needs_body",
        "replaced_fields",
    )

    def __init__(
        self, settings: DeprecationSettings, route: str, calls: LabelledCounter | None
    ) -> None:
        self.needs_body = False
        self._route = route
        self._calls = calls
        fields: list[tuple[str, str]] = []
        if settings.since is not None:
            fields.append(("deprecation", f"@{int(settings.since.timestamp())}"))
        self._sunset = -1.0
        self._gone_detail = ""
        if settings.sunset is not None:
            self._sunset = settings.sunset.timestamp()
            http_date = formatdate(self._sunset, usegmt=True)
            fields.append(("sunset", http_date))
            self._gone_detail = f"this route was retired on {http_date}"
        if settings.retired:
            # Gone now, whatever the sunset said: 0 is a moment every clock has passed.
            self._sunset = 0.0
            self._gone_detail = "this route is retired"
        guide = settings.link or settings.sunset_link
        if self._gone_detail and guide:
            self._gone_detail += f"; see {guide}"
        if settings.link:
            fields.append(("link", f'<{settings.link}>; rel="deprecation"; type="text/html"'))
        if settings.sunset_link:
            fields.append(("link", f'<{settings.sunset_link}>; rel="sunset"; type="text/html"'))
        # Both forms, made here from the one list, so they cannot differ: the bytes for an
        # upstream's head relayed as bytes (the hot path: no encoding per response), the text
        # for on_response (Headers hold text: Portico's own answers, heads with other policies).
        # Deriving either per response would cost two allocations a field on every response.
        self._fields = tuple(fields)
        self._raw_fields = tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in fields)
        self.replaced_fields: frozenset[bytes] = frozenset()

    def on_request(self, exchange: Exchange) -> Reply | None:
        if self._sunset >= 0.0 and time.time() >= self._sunset:
            return problems.problem(problems.ROUTE_SUNSET, exchange.request_id, self._gone_detail)
        return None

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        for name, value in self._fields:
            headers.add(name, value)

    def response_fields(
        self, exchange: Exchange, status: int, fields: list[tuple[bytes, bytes]]
    ) -> None:
        """``on_response`` on an upstream's head of bytes."""
        fields.extend(self._raw_fields)


class CountedDeprecation(Deprecation):
    """The policy when ``/metrics`` counts: each exchange of the route, once it is over, by
    consumer (its identity when the ``auth`` policy found one, else ``""``). Counted on
    completion so that every call counts once, whatever answered it (the upstream, a 401, the
    410 after the sunset), and whichever policy set the identity."""

    __slots__ = ()

    def on_complete(self, exchange: Exchange, completion: Completion) -> None:
        calls = self._calls
        assert calls is not None
        identity = exchange.identity
        calls.inc((self._route, identity.consumer if identity is not None else ""))


def build(settings: DeprecationSettings, context: BuildContext) -> Deprecation:
    stats = context.extensions.stats
    calls = stats.counter(
        "portico_deprecated_requests",
        "Calls to routes with a deprecation policy, by route and consumer (empty: no identity).",
        ("route", "consumer"),
    )
    if not stats.enabled:
        # Without counting, no completion hook: it would make every exchange timed for nothing.
        return Deprecation(settings, context.route_name, None)
    return CountedDeprecation(settings, context.route_name, calls)
