"""Authentication methods: the interface each one implements, and the catalogue of methods.

A route's ``auth`` policy lists the methods it accepts (``api_key``, ``oauth``, ``jwt:<provider>``,
``signature``, ``mtls``). For each request the policy asks every listed method whether its
credentials are :meth:`~Authenticator.present`; the first one present decides:
an :class:`~portico.gateway.exchange.Identity` lets the request in, a :class:`Rejected` answers 401
with the method's ``WWW-Authenticate`` challenge. With no credentials at all the answer is 401 with
the challenges of every accepted method. Responses never say whether a key or client exists.

Methods are built once per snapshot by ``build_authenticator(settings, context)`` in their module;
:data:`METHODS` maps a method name to that module, imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from portico.gateway.exchange import Exchange, Identity

if TYPE_CHECKING:
    from portico.policies.registry import BuildContext


@dataclass(frozen=True, slots=True)
class Rejected:
    """Credentials were presented and are not valid."""

    challenge: str
    """The ``WWW-Authenticate`` value, e.g. ``Bearer error="invalid_token"`` (RFC 6750 §3)."""
    reason: str
    """Why, for the log only: the client is told nothing more than the challenge."""


AuthResult = Identity | Rejected


class Authenticator(Protocol):
    method: str

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` challenge sent when no credentials were presented."""
        ...

    def present(self, exchange: Exchange) -> bool:
        """Whether the request carries this method's credentials (cheap, no verification)."""
        ...

    def authenticate(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult]:
        """Verify the credentials; return an awaitable only when I/O is unavoidable."""
        ...


AuthenticatorFactory = Callable[[Any, "BuildContext"], Authenticator]

# method name (before any ":") -> module defining build_authenticator(settings, context)
METHODS: dict[str, str] = {
    "api_key": "portico.identity.apikeys",
    "oauth": "portico.identity.oauth.authn",
    "jwt": "portico.identity.jwt",
    "signature": "portico.identity.signatures",
    "mtls": "portico.identity.mtls",
}


def factory_for(method: str) -> AuthenticatorFactory:
    """The ``build_authenticator`` of a method; ``jwt:okta`` uses the ``jwt`` module."""
    module = METHODS[method.partition(":")[0]]
    factory: AuthenticatorFactory = importlib.import_module(module).build_authenticator
    return factory
