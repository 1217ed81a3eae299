"""The security of a route as an OpenAPI document says it: the schemes of the methods its
``auth`` entry accepts, and the requirements with the scopes it needs.

=====================  ===========================================================================
method                 security scheme
=====================  ===========================================================================
``api_key``            ``apiKey`` in the header the route reads (``X-API-Key`` unless its
                       ``api_key: {header: ...}`` says otherwise): ``apiKey``, or
                       ``apiKey-<Header>`` for another header
``oauth``              ``oauth2``, flow ``clientCredentials`` with the token URL of Portico's own
                       authorization server (``identity.oauth``) and every scope the document's
                       operations need
``jwt:<provider>``     ``http`` ``bearer`` (``bearerFormat: JWT``): ``jwt-<provider>``, naming
                       the provider's issuer
``mtls``               ``mutualTLS``
``signature``          ``apiKey`` in the ``Signature`` header (``httpSignature``): OpenAPI has no
                       scheme for HTTP Message Signatures (RFC 9421); its description says how
                       a request is signed
=====================  ===========================================================================

A request passes with any one of the methods, so each method is one alternative of the
requirements; a scope rule ``any_of`` makes one alternative per scope. OpenAPI 3.1 lets the
schemes other than ``oauth2`` list scopes too ("roles"): Portico checks a consumer's scopes
whatever the method, so each alternative lists them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from portico.config.model import PolicySpec, PorticoConfig
from portico.identity.method_settings import ApiKeySettings
from portico.policies.auth.settings import AuthSettings

__all__ = ["RouteAuth", "route_auth", "scheme_of", "security_schemes"]

_NOT_NAME = re.compile(r"[^A-Za-z0-9._-]+")
DEFAULT_API_KEY_HEADER = ApiKeySettings().header


@dataclass(frozen=True, slots=True)
class RouteAuth:
    """What a route's ``auth`` entry asks of a caller."""

    methods: tuple[str, ...]
    all_of: tuple[str, ...]
    any_of: tuple[str, ...]
    api_key_header: str
    tenants: tuple[str, ...]

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.all_of, *self.any_of)))

    def schemes(self) -> list[str]:
        return [scheme_of(method, self.api_key_header) for method in self.methods]

    def requirements(self) -> list[dict[str, list[str]]]:
        """OpenAPI's ``security`` of the operation."""
        sets = [[*self.all_of, one] for one in self.any_of] if self.any_of else [list(self.all_of)]
        return [{scheme: list(scopes)} for scheme in self.schemes() for scopes in sets]


def route_auth(specs: tuple[PolicySpec, ...]) -> RouteAuth | None:
    """The ``auth`` entry among a route's effective policies, if it has one."""
    spec = next((s for s in specs if s.type == "auth"), None)
    if spec is None:
        return None
    settings = AuthSettings.model_validate(dict(spec.model_extra or {}))
    options = settings.options_for("api_key") if "api_key" in settings.methods else None
    header = options.header if isinstance(options, ApiKeySettings) else DEFAULT_API_KEY_HEADER
    return RouteAuth(
        methods=settings.methods,
        all_of=settings.scopes.all_of,
        any_of=settings.scopes.any_of,
        api_key_header=header,
        tenants=settings.tenants,
    )


def scheme_of(method: str, api_key_header: str = DEFAULT_API_KEY_HEADER) -> str:
    """The name of the security scheme of a method (as a route lists it)."""
    base, _, provider = method.partition(":")
    if base == "api_key":
        if api_key_header.lower() == DEFAULT_API_KEY_HEADER.lower():
            return "apiKey"
        return "apiKey-" + _NOT_NAME.sub("-", api_key_header)
    if base == "oauth":
        return "oauth2"
    if base == "jwt":
        return "jwt-" + _NOT_NAME.sub("-", provider)
    if base == "mtls":
        return "mutualTLS"
    if base == "signature":
        return "httpSignature"
    return _NOT_NAME.sub("-", method)


def token_url(config: PorticoConfig) -> str | None:
    """The token endpoint of Portico's authorization server, as its metadata names it."""
    oauth = config.identity.oauth
    if oauth is None:
        return None
    issuer = urlsplit(oauth.issuer)
    prefix = "/" + oauth.path_prefix.strip("/") if oauth.path_prefix.strip("/") else ""
    return f"{issuer.scheme}://{issuer.netloc}{prefix}/token"


def security_schemes(
    config: PorticoConfig, used: list[RouteAuth], scope_notes: dict[str, str]
) -> dict[str, dict[str, Any]]:
    """The ``components.securitySchemes`` of the methods ``used`` routes accept; the OAuth
    scopes described with ``scope_notes`` where a service's document described them."""
    schemes: dict[str, dict[str, Any]] = {}
    oauth_scopes: dict[str, str] = {}
    for auth in used:
        for method in auth.methods:
            name = scheme_of(method, auth.api_key_header)
            base, _, provider = method.partition(":")
            if base == "oauth":
                for scope in auth.scopes:
                    oauth_scopes.setdefault(scope, scope_notes.get(scope, ""))
            if name in schemes:
                continue
            schemes[name] = _scheme(config, base, provider, auth.api_key_header)
    if "oauth2" in schemes:
        flow = schemes["oauth2"]["flows"]["clientCredentials"]
        flow["scopes"] = dict(sorted(oauth_scopes.items()))
    return schemes


def _scheme(config: PorticoConfig, base: str, provider: str, header: str) -> dict[str, Any]:
    if base == "api_key":
        return {
            "type": "apiKey",
            "in": "header",
            "name": header,
            "description": f"An API key in `{header}` (or `Authorization: ApiKey <key>`).",
        }
    if base == "oauth":
        return {
            "type": "oauth2",
            "description": "An access token of Portico's authorization server, from the "
            "client credentials grant, in `Authorization: Bearer`.",
            "flows": {"clientCredentials": {"tokenUrl": token_url(config) or "/oauth2/token"}},
        }
    if base == "jwt":
        found = config.identity.providers.get(provider)
        issuer = f" (issuer `{found.issuer}`)" if found is not None else ""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": f"A JWT of the identity provider `{provider}`{issuer}, in "
            "`Authorization: Bearer`.",
        }
    if base == "mtls":
        return {
            "type": "mutualTLS",
            "description": "A TLS client certificate presented to the gateway's HTTPS listener.",
        }
    if base == "signature":
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Signature",
            "description": "A signed request: HTTP Message Signatures (RFC 9421), the "
            "`Signature` and `Signature-Input` fields with the consumer's `keyid`, covering "
            "`@method` and the target (`@authority`, `@path`, `@query` when there is one; or "
            "`@target-uri`) and `content-digest` with a body, with `created` and a `nonce`.",
        }
    return {"type": "apiKey", "in": "header", "name": "Authorization"}
