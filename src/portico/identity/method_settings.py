"""The authentication methods as the ``auth`` policy knows them before building any: each one's
per-route options model, and where its code is (:class:`~portico.identity.authn.AuthMethod`).

They live apart from the methods themselves, for two reasons: the methods' request-time code is
compiled with mypyc (see docs/architecture.md, "Compiled hot path"), which cannot compile
pydantic models; and ``portico check`` validates a route's methods and options with this module
alone, without importing the methods' code and its libraries (cryptography, PyJWT, the
signatures library).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from portico.config.model import Duration, HeaderName
from portico.identity.authn import AuthMethod

__all__ = [
    "API_KEY",
    "JWT",
    "MTLS",
    "NEEDS_CLIENT_CERTIFICATES",
    "OAUTH",
    "SIGNATURE",
    "ApiKeySettings",
    "BearerSettings",
    "SignatureSettings",
]


class ApiKeySettings(BaseModel):
    """Per-route settings of the method: ``api_key: {header: X-Partner-Key}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    header: HeaderName = "X-API-Key"
    authorization: bool = True
    """Also accept ``Authorization: ApiKey <key>``."""
    hide_credentials: bool = True
    """Remove the key from the request sent upstream."""


class BearerSettings(BaseModel):
    """Per-route options of the ``oauth`` and ``jwt:<provider>`` methods:
    ``oauth: {hide_credentials: false}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hide_credentials: bool = True
    """Remove the ``Authorization`` field from the request sent upstream once the token is
    verified (the upstream gets the identity headers). ``false`` passes the token on, for an
    upstream that verifies it again or relays it."""


_UNCOVERABLE = frozenset({"signature", "signature-input"})


def _lower_names(names: tuple[str, ...]) -> tuple[str, ...]:
    lowered = tuple(dict.fromkeys(name.lower() for name in names))
    refused = [name for name in lowered if name in _UNCOVERABLE]
    if refused:
        raise ValueError(f"{refused[0]!r} cannot be covered by a signature")
    return lowered


class SignatureSettings(BaseModel):
    """Per-route options of the method: ``signature: {headers: [date], max_age: 2m}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    headers: Annotated[tuple[HeaderName, ...], AfterValidator(_lower_names)] = ()
    """Header fields every signature must cover, besides the method and the request target."""
    max_age: Duration = 300.0
    """How old ``created`` may be."""
    clock_skew: Duration = 5.0
    """How far in the future ``created`` may be (and the tolerance on ``expires``)."""
    require_nonce: bool = True
    """Refuse signatures without a ``nonce``; a nonce is never accepted twice in the window."""
    tag: str | None = None
    """Verify the signature whose ``tag`` parameter has this value (needed when clients send
    several signatures); without it a request must carry exactly one signature."""


NEEDS_CLIENT_CERTIFICATES = (
    "mtls is accepted, but the gateway does not ask for client certificates: set gateway.tls "
    "with client_ca and client_certificate"
)
"""Why a route cannot accept ``mtls``: ``portico check`` reports it at the method's line."""

API_KEY = AuthMethod("portico.identity.apikeys:build_authenticator", ApiKeySettings)
OAUTH = AuthMethod("portico.identity.oauth.authn:build_authenticator", BearerSettings)
JWT = AuthMethod("portico.identity.jwt:build_authenticator", BearerSettings)
SIGNATURE = AuthMethod("portico.identity.signatures:build_authenticator", SignatureSettings)
MTLS: AuthMethod[BaseModel] = AuthMethod("portico.identity.mtls:build_authenticator")
