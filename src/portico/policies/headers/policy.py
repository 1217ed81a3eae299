"""The ``headers`` policy at request time: set, add or remove request and response header fields.

    policies:
      - type: headers
        request: {set: {X-Tenant: acme}, remove: [Cookie]}
        response: {set: {Cache-Control: no-store}}

Compiled with mypyc (``[tool.portico.native]``): the edits are copied out of the settings into
plain tuples when the snapshot is built, so a request touches no pydantic model.
"""

from __future__ import annotations

from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.context import BuildContext
from portico.policies.headers.settings import HeaderEdits, HeadersSettings

__all__ = ["CompiledHeaderEdits", "HeaderTransform", "build"]


class CompiledHeaderEdits:
    """One side's edits, as :class:`~.settings.HeaderEdits` says, ready to apply."""

    __slots__ = ("_add", "_remove", "_set")

    def __init__(self, edits: HeaderEdits) -> None:
        self._remove = tuple(edits.remove)
        self._set = tuple(edits.set.items())
        self._add = tuple(edits.add.items())

    def apply(self, headers: Headers) -> None:
        if self._remove:
            headers.remove(*self._remove)
        for name, value in self._set:
            headers.set(name, value)
        for name, value in self._add:
            headers.add(name, value)


class HeaderTransform:
    __slots__ = ("_request", "_response", "needs_body")

    def __init__(self, settings: HeadersSettings) -> None:
        self._request = CompiledHeaderEdits(settings.request)
        self._response = CompiledHeaderEdits(settings.response)
        self.needs_body = False

    def on_request(self, exchange: Exchange) -> Reply | None:
        self._request.apply(exchange.headers)
        return None

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        self._response.apply(headers)


def build(settings: HeadersSettings, context: BuildContext) -> HeaderTransform:
    return HeaderTransform(settings)
