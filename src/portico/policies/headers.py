"""The ``headers`` policy: set, add or remove request and response header fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from portico.config.model import HeaderName
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.policies.registry import BuildContext, register


class HeaderEdits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    set: dict[HeaderName, str] = {}
    add: dict[HeaderName, str] = {}
    remove: tuple[HeaderName, ...] = ()

    def apply(self, headers: Headers) -> None:
        if self.remove:
            headers.remove(*self.remove)
        for name, value in self.set.items():
            headers.set(name, value)
        for name, value in self.add.items():
            headers.add(name, value)


class HeadersSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request: HeaderEdits = HeaderEdits()
    response: HeaderEdits = HeaderEdits()


class HeaderTransform:
    __slots__ = ("_request", "_response")
    needs_body = False

    def __init__(self, settings: HeadersSettings) -> None:
        self._request = settings.request
        self._response = settings.response

    def on_request(self, exchange: Exchange) -> Reply | None:
        self._request.apply(exchange.headers)
        return None

    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None:
        self._response.apply(headers)


@register("headers", HeadersSettings)
def build(settings: HeadersSettings, context: BuildContext) -> HeaderTransform:
    return HeaderTransform(settings)
