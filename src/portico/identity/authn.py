"""Authentication methods: the interface each one implements, and the catalogue of methods.

A route's ``auth`` policy lists the methods it accepts (``api_key``, ``oauth``, ``jwt:<provider>``,
``signature``, ``mtls``). For each request the policy asks every listed method whether its
credentials are :meth:`~Authenticator.present`; the first one present decides:
an :class:`~portico.gateway.exchange.Identity` lets the request in, a :class:`Rejected` answers 401
with the method's ``WWW-Authenticate`` challenge. With no credentials at all the answer is 401 with
the challenges of every accepted method. Responses never say whether a key or client exists.

Methods are built once per snapshot by ``build_authenticator(settings, context)`` in their module,
which registers it with :func:`register_method` as an :class:`AuthMethod`; :data:`METHODS` maps a
method name to that module, imported on first use (:func:`auth_method`). ``settings`` is a
:class:`MethodSettings`: the method's name as the route lists it (``jwt:okta``, whose
``provider`` is ``okta``) and the route's options for it. A method may register ``options``, a
Pydantic model: the ``auth`` policy then validates the options with it when the config is checked
and passes the model instance; without one, a route cannot give the method options.

Every method also has ``identify(exchange)``: ``present`` and ``authenticate`` in one pass,
returning ``None`` when its credentials are absent; the ``auth`` policy calls only that, and a
method that can saves a scan of the header fields on every request. ``needs_body`` and
``accept_signature`` are the hooks of a method that verifies the body (signed requests); the
others answer ``False`` and ``None``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from portico.gateway.exchange import Exchange, Identity

if TYPE_CHECKING:
    from pydantic import BaseModel

    from portico.identity.context import BuildContext


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

    @property
    def needs_body(self) -> bool:
        """Whether the method reads the whole request body (a signed ``Content-Digest``): the
        route then reads it before its pipeline runs."""
        ...

    @property
    def accept_signature(self) -> str | None:
        """An ``Accept-Signature`` (RFC 9421 §5.1) to send with the 401 for a request without
        credentials, or ``None``."""
        ...

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` challenge sent when no credentials were presented."""
        ...

    def present(self, exchange: Exchange) -> bool:
        """Whether the request carries this method's credentials (cheap, no verification)."""
        ...

    def authenticate(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult]:
        """Verify the credentials; return an awaitable only when I/O is unavoidable."""
        ...

    def identify(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult] | None:
        """``present`` and ``authenticate`` in one pass: ``None`` when the request carries no
        credentials of this method."""
        ...


@dataclass(frozen=True, slots=True)
class MethodSettings:
    """What the ``auth`` policy gives a method's ``build_authenticator``."""

    name: str
    """The method as the route lists it: ``api_key``, ``jwt:okta``."""
    options: Any = None
    """The route's options for the method (an instance of the module's ``Settings`` model), or
    ``None`` when the route gives none."""

    @property
    def provider(self) -> str | None:
        """What follows the ``:`` of the name (``okta`` for ``jwt:okta``), if anything."""
        _, sep, rest = self.name.partition(":")
        return rest if sep else None


class MethodUnavailable(ValueError):
    """A route names a method that is unknown or not part of this installation."""


@dataclass(frozen=True, slots=True)
class AuthMethod:
    """How the ``auth`` policy builds a method and validates a route's options for it."""

    build: Callable[[MethodSettings, BuildContext], Authenticator]
    """Called once per route and snapshot."""
    options: type[BaseModel] | None = None
    """The model of the route's options for the method; ``None``: it takes none."""


_REGISTERED: dict[str, AuthMethod] = {}


def register_method(name: str, method: AuthMethod) -> None:
    """Called by a method's module when it is imported."""
    _REGISTERED[name] = method


# method name (before any ":") -> module that registers it
METHODS: dict[str, str] = {
    "api_key": "portico.identity.apikeys",
    "oauth": "portico.identity.oauth.authn",
    "jwt": "portico.identity.jwt",
    "signature": "portico.identity.signatures",
    "mtls": "portico.identity.mtls",
}


def auth_method(method: str) -> AuthMethod:
    """The registered ``method`` (its module imported on first use); :class:`MethodUnavailable`
    with a clear message when the name is unknown or its module is missing."""
    base = method.partition(":")[0]
    name = METHODS.get(base)
    if name is None:
        known = ", ".join(sorted(METHODS))
        raise MethodUnavailable(f"unknown authentication method {method!r} (known: {known})")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not name.startswith(exc.name):
            raise
        raise MethodUnavailable(
            f"authentication method {base!r} is not available in this installation"
        ) from None
    registered = _REGISTERED.get(base)
    if registered is None:
        raise MethodUnavailable(f"authentication method {base!r} is not available yet")
    return registered
