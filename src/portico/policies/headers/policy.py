"""The ``headers`` policy at request time: remove, rename, set or add request and response header
fields.

    policies:
      - type: headers
        request: {set: {X-Tenant: acme}, remove: [Cookie], rename: {X-Token: X-Partner-Token}}
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

    __slots__ = ("_add", "_remove", "_rename", "_set")

    def __init__(self, edits: HeaderEdits) -> None:
        self._remove = tuple(edits.remove)
        self._rename = {old.lower(): new.lower() for old, new in edits.rename.items()}
        self._set = tuple(edits.set.items())
        self._add = tuple(edits.add.items())

    def apply(self, headers: Headers) -> None:
        if self._remove:
            headers.remove(*self._remove)
        if self._rename:
            self._apply_rename(headers)
        for name, value in self._set:
            headers.set(name, value)
        for name, value in self._add:
            headers.add(name, value)

    def _apply_rename(self, headers: Headers) -> None:
        rename = self._rename
        # The names the renamed fields take: fields already called so are dropped, so that the
        # value that travels under the new name is only ever the renamed one.
        taken = {rename[name] for name, _ in headers.items if name in rename}
        if not taken:
            return
        out: list[tuple[str, str]] = []
        for name, value in headers.items:
            new = rename.get(name)
            if new is not None:
                out.append((new, value))
            elif name not in taken:
                out.append((name, value))
        headers.items = out


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
