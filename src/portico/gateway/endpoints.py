"""Built-in endpoints: HTTP resources Portico serves itself, on the gateway's own listeners.

The OAuth 2.0 token, introspection and revocation endpoints, the JWKS and the server metadata are
built-in endpoints. They are matched before routes; the request body is read whole (up to
``max_body_size``) and handed to the endpoint, which answers with a complete
:class:`~portico.gateway.exchange.Reply`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol

from portico.gateway.exchange import Exchange, Reply


class Endpoint(Protocol):
    def handle(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]: ...


@dataclass(frozen=True, slots=True)
class BuiltinEndpoint:
    path: str
    """A path template, as for routes."""
    methods: frozenset[str]
    endpoint: Endpoint
    max_body_size: int = 64 * 1024
