"""Authentication methods: the interface each one implements, and the catalogue of methods.

A route's ``auth`` policy lists the methods it accepts (``api_key``, ``oauth``, ``jwt:<provider>``,
``signature``, ``mtls``). For each request the policy asks every listed method whether its
credentials are :meth:`~Authenticator.present`; the first one present decides:
an :class:`~portico.gateway.exchange.Identity` lets the request in, a :class:`Rejected` answers 401
with the method's ``WWW-Authenticate`` challenge. With no credentials at all the answer is 401 with
the challenges of every accepted method. Responses never say whether a key or client exists.

Methods are built once per snapshot by ``build_authenticator(settings, context)`` in their module.
Each is declared as an :class:`AuthMethod` (its options model, and its builder by reference) in
:mod:`portico.identity.method_settings`; :data:`METHODS`, a
:class:`~portico.core.extensions.Catalogue`, names those declarations (:func:`auth_method`). A
method's module is imported when a route using it is first built, not when a config is checked.
``settings`` is a :class:`MethodSettings`: the method's name as the route lists it (``jwt:okta``,
whose ``provider`` is ``okta``) and the route's options for it.
A method may declare ``options``, a Pydantic model: the ``auth`` policy then validates the options
with it when the config is checked and passes the model instance; without one, a route cannot
give the method options.

Every method also has ``identify(exchange)``: ``present`` and ``authenticate`` in one pass,
returning ``None`` when its credentials are absent; the ``auth`` policy calls only that, and a
method that can saves a scan of the header fields on every request. ``needs_body`` and
``accept_signature`` are the hooks of a method that verifies the body (signed requests); the
others answer ``False`` and ``None``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from portico.core.extensions import Catalogue, Deferred
from portico.gateway.exchange import Exchange, Identity

if TYPE_CHECKING:
    # For annotations only: this module is compiled, and mypyc cannot compile pydantic.
    from pydantic import BaseModel

    from portico.identity.context import BuildContext

O_co = TypeVar("O_co", bound="BaseModel", covariant=True)
# Covariant, so that METHODS holds AuthMethod[BaseModel] whatever each method's options are: a
# method's options are only ever made by its own model, and AuthMethod.build checks that.


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


class MethodSettings(Generic[O_co]):
    """What the ``auth`` policy gives a method's ``build_authenticator``."""

    __slots__ = ("name", "options")

    def __init__(self, name: str, options: O_co | None = None) -> None:
        self.name = name
        """The method as the route lists it: ``api_key``, ``jwt:okta``."""
        self.options = options
        """The route's options for the method (an instance of its ``options`` model), or
        ``None`` when the route gives none."""

    @property
    def provider(self) -> str | None:
        """What follows the ``:`` of the name (``okta`` for ``jwt:okta``), if anything."""
        _, sep, rest = self.name.partition(":")
        return rest if sep else None


class AuthMethod(Generic[O_co]):
    """How the ``auth`` policy builds a method and validates a route's options for it:
    ``AuthMethod("portico.identity.apikeys:build_authenticator", ApiKeySettings)``, declared in
    :mod:`portico.identity.method_settings` and named by :data:`METHODS`. The builder is given by
    reference, so that checking a config imports the options model and not the method's code."""

    __slots__ = ("_build", "options")

    def __init__(
        self,
        build: Callable[[MethodSettings[O_co], BuildContext], Authenticator] | str,
        options: type[O_co] | None = None,
    ) -> None:
        self._build: Deferred[Callable[[MethodSettings[O_co], BuildContext], Authenticator]] = (
            Deferred(build)
        )
        """Called once per route and snapshot; imported on the first build."""
        self.options = options
        """The model of the route's options for the method; ``None``: it takes none."""

    def build(self, name: str, options: BaseModel | None, context: BuildContext) -> Authenticator:
        """The method's authenticator for one route: ``name`` as the route lists it, ``options``
        as :attr:`options` validated them."""
        model = self.options
        build = self._build.get()
        if options is None:
            return build(MethodSettings(name), context)
        if model is None or not isinstance(options, model):
            raise TypeError(f"method {name!r}: options of {type(options).__name__} given")
        return build(MethodSettings(name, options), context)


METHODS: Catalogue[AuthMethod[BaseModel]] = Catalogue(
    "authentication method",
    AuthMethod,
    {
        "api_key": "portico.identity.method_settings:API_KEY",
        "oauth": "portico.identity.method_settings:OAUTH",
        "jwt": "portico.identity.method_settings:JWT",
        "signature": "portico.identity.method_settings:SIGNATURE",
        "mtls": "portico.identity.method_settings:MTLS",
    },
)
"""The methods a route's ``auth`` may list, by the part of the name before any ``:``."""


def auth_method(method: str) -> AuthMethod[BaseModel]:
    """The method a route lists as ``method`` (``jwt:okta`` is ``jwt``), its module imported on
    first use; :class:`~portico.core.extensions.ExtensionUnavailable` (a ``ValueError``) with a
    clear message when the name is unknown or its module is not installed."""
    return METHODS.get(method.partition(":")[0])
