"""The protocol every policy implements.

A route's pipeline is the ordered tuple of its policies, built when the runtime snapshot is built.
For each request the gateway awaits ``on_request`` of each policy in order; the first one that
returns a :class:`~portico.gateway.exchange.Reply` answers the request and the rest are skipped.
After the upstream answered, ``on_response`` of each policy runs in reverse order on the response
head (status and headers) before it is sent to the client; bodies are streamed and not seen here.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers


@runtime_checkable
class Policy(Protocol):
    async def on_request(self, exchange: Exchange) -> Reply | None: ...


@runtime_checkable
class ResponsePolicy(Protocol):
    def on_response(self, exchange: Exchange, status: int, headers: Headers) -> None: ...
