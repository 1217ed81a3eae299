"""The authorization server's built-in endpoints.

======================================================  ==========================================
``POST {path_prefix}/token``                            client credentials grant (RFC 6749 §4.4)
``POST {path_prefix}/introspect``                       token introspection (RFC 7662)
``POST {path_prefix}/revoke``                           token revocation (RFC 7009)
``GET /.well-known/jwks.json``                          the published signing keys (RFC 7517)
``GET /.well-known/oauth-authorization-server``         server metadata (RFC 8414)
======================================================  ==========================================

A client introspects and revokes only the tokens issued to itself (their ``client_id``); any other
token is ``{"active": false}`` to it and is left alone by its revocation, so one client learns
nothing about another's tokens (RFC 7662 §4, RFC 7009 §2.1). A client whose config says
``introspect_any: true`` (a resource server checking other clients' tokens) introspects every token.

Errors of the OAuth endpoints are the JSON objects of RFC 6749 §5.2 (``error``,
``error_description``), which OAuth clients expect, rather than problem+json. Every answer that
carries a token or a token's details is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from portico.config.model import OAuthServer, PorticoConfig
from portico.core.http import REALM
from portico.gateway.endpoints import BuiltinEndpoint
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.identity.context import EndpointProvider, Extensions
from portico.identity.keyset import ASYMMETRIC_ALGORITHMS
from portico.identity.oauth.clients import (
    AUTH_METHODS,
    Client,
    ClientAuthenticator,
    ClientAuthError,
    clients_from_config,
)
from portico.identity.oauth.state import OAuthState
from portico.identity.oauth.tokens import InvalidAccessToken, TokenPolicy, token_policy

log = logging.getLogger("portico.identity.oauth")

JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 32
_POST = frozenset({"POST"})
_GET = frozenset({"GET", "HEAD"})
_Step = Callable[[Client, Mapping[str, str]], Reply | Awaitable[Reply]]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _json(status: int, data: Mapping[str, Any], headers: Headers | None = None) -> Reply:
    out = headers or Headers()
    out.set("content-type", "application/json")
    out.set("cache-control", "no-store")
    out.set("pragma", "no-cache")
    return Reply(status, out, json.dumps(data, separators=(",", ":")).encode())


def error_reply(exc: OAuthError | ClientAuthError, request_id: str) -> Reply:
    # RFC 6749 §5.2 members, plus the request id every Portico error carries.
    body = {"error": exc.error, "error_description": exc.description, "request_id": request_id}
    if isinstance(exc, ClientAuthError):
        if exc.error != "invalid_client":
            return _json(400, body)
        # RFC 6749 §5.2: 401 with a challenge (a MUST when Basic was used; here always, so
        # every client learns it may use Basic).
        return _json(401, body, Headers([("www-authenticate", f'Basic realm="{REALM}"')]))
    return _json(exc.status, body)


def parse_form(exchange: Exchange, body: bytes) -> dict[str, str]:
    content_type = (exchange.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if content_type != FORM:
        raise OAuthError("invalid_request", f"the request body must be {FORM}")
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form body is malformed") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise OAuthError("invalid_request", f"parameter {name!r} appears more than once")
        form[name] = value
    return form


class AuthorizationServer:
    """The endpoints of one configuration of the server, over the process's live state."""

    def __init__(
        self,
        settings: OAuthServer,
        clients: Mapping[str, Client],
        state: OAuthState,
        introspect_any: frozenset[str] = frozenset(),
    ):
        self.settings = settings
        self.state = state
        self.introspect_any = introspect_any
        """Ids of the clients that may introspect the tokens of every client."""
        self.policy: TokenPolicy = token_policy(settings)
        issuer = urlsplit(settings.issuer)
        origin = f"{issuer.scheme}://{issuer.netloc}"
        prefix = "/" + settings.path_prefix.strip("/") if settings.path_prefix.strip("/") else ""
        self.paths = {
            "token": f"{prefix}/token",
            "introspect": f"{prefix}/introspect",
            "revoke": f"{prefix}/revoke",
            "jwks": JWKS_PATH,
            # RFC 8414 §3.1: the issuer's path component goes after the well-known name.
            "metadata": METADATA_PATH + issuer.path.rstrip("/"),
        }
        self.urls = {name: origin + path for name, path in self.paths.items()}
        self.clients = ClientAuthenticator(
            clients,
            audiences=frozenset(
                {settings.issuer, self.urls["token"], self.urls["introspect"], self.urls["revoke"]}
            ),
            remember_assertion=state.remember_assertion,
            leeway=self.policy.leeway,
        )
        self._metadata = json.dumps(self.metadata(clients), separators=(",", ":")).encode()
        self._jwks: tuple[object, bytes] | None = None

    def endpoints(self) -> list[BuiltinEndpoint]:
        return [
            BuiltinEndpoint(self.paths["token"], _POST, _Call(self.token)),
            BuiltinEndpoint(self.paths["introspect"], _POST, _Call(self.introspect)),
            BuiltinEndpoint(self.paths["revoke"], _POST, _Call(self.revoke)),
            BuiltinEndpoint(self.paths["jwks"], _GET, _Call(self.jwks)),
            BuiltinEndpoint(self.paths["metadata"], _GET, _Call(self.metadata_document)),
        ]

    def metadata(self, clients: Mapping[str, Client]) -> dict[str, Any]:
        signing = sorted(ASYMMETRIC_ALGORITHMS)
        methods = list(AUTH_METHODS)
        return {
            "issuer": self.settings.issuer,
            "token_endpoint": self.urls["token"],
            "jwks_uri": self.urls["jwks"],
            "introspection_endpoint": self.urls["introspect"],
            "revocation_endpoint": self.urls["revoke"],
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "scopes_supported": sorted({s for c in clients.values() for s in c.scopes}),
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": signing,
            "introspection_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_signing_alg_values_supported": signing,
            "revocation_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_signing_alg_values_supported": signing,
        }

    # -- endpoints -----------------------------------------------------------------------------

    def token(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        try:
            form = parse_form(exchange, body)
            grant_type = form.get("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "grant_type is required")
            if grant_type != "client_credentials":
                raise OAuthError(
                    "unsupported_grant_type", "this server supports client_credentials only"
                )
            client = self.clients.authenticate(exchange.headers, form)
            if isinstance(client, Client):
                return self._issue(client, form)
        except (OAuthError, ClientAuthError) as exc:
            return error_reply(exc, exchange.request_id)
        return self._then(client, self._issue, form, exchange.request_id)

    def introspect(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        try:
            form = parse_form(exchange, body)
            client = self.clients.authenticate(exchange.headers, form)
            if isinstance(client, Client):
                return self._introspection(client, form)
        except (OAuthError, ClientAuthError) as exc:
            return error_reply(exc, exchange.request_id)
        return self._then(client, self._introspection, form, exchange.request_id)

    def revoke(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        try:
            form = parse_form(exchange, body)
            client = self.clients.authenticate(exchange.headers, form)
            if isinstance(client, Client):
                return self._revocation(client, form)
        except (OAuthError, ClientAuthError) as exc:
            return error_reply(exc, exchange.request_id)
        return self._then(client, self._revocation, form, exchange.request_id)

    def jwks(self, exchange: Exchange, body: bytes) -> Reply:
        keyring = self.state.keyring
        if self._jwks is None or self._jwks[0] is not keyring:
            self._jwks = (keyring, json.dumps(keyring.jwks(), separators=(",", ":")).encode())
        return _public_json(self._jwks[1], "application/jwk-set+json")

    def metadata_document(self, exchange: Exchange, body: bytes) -> Reply:
        return _public_json(self._metadata, "application/json")

    # -- grants and token operations -----------------------------------------------------------

    async def _then(
        self, pending: Awaitable[Client], step: _Step, form: dict[str, str], request_id: str
    ) -> Reply:
        try:
            client = await pending
            result = step(client, form)
            return result if isinstance(result, Reply) else await result
        except (OAuthError, ClientAuthError) as exc:
            return error_reply(exc, request_id)

    def _issue(self, client: Client, form: Mapping[str, str]) -> Reply:
        requested = form.get("scope")
        if requested:
            scopes = frozenset(requested.split()) & client.scopes
            if not scopes:
                raise OAuthError("invalid_scope", "none of the requested scopes is granted")
        else:
            scopes = client.scopes
        key = self.state.keyring.signing
        if key is None:
            log.error("no active OAuth signing key: run `portico oauth rotate-key`")
            raise OAuthError("temporarily_unavailable", "no signing key is available", 503)
        issued = self.policy.issue(
            key,
            consumer=client.consumer,
            tenant=client.tenant,
            client_id=client.client_id,
            scopes=scopes,
            now=int(time.time()),
        )
        answer: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
        }
        if scopes:
            answer["scope"] = issued.claims["scope"]
        return _json(200, answer)

    def _verified(self, form: Mapping[str, str]) -> dict[str, Any] | None:
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        try:
            claims = self.policy.verify(token, self.state.keyring)
        except InvalidAccessToken:
            return None
        return None if self.state.is_revoked(claims["jti"]) else claims

    def _introspection(self, client: Client, form: Mapping[str, str]) -> Reply:
        claims = self._verified(form)
        # RFC 7662 §2.2 lets the server call a token inactive to a client that may not see it,
        # and §4 asks it to resist token scanning: another client's token answers exactly as an
        # unknown one does.
        if claims is None or not self._may_introspect(client, claims):
            return _json(200, {"active": False})
        answer = {"active": True, "token_type": "Bearer"}
        answer.update(
            (name, claims[name])
            for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "tenant")
            if name in claims
        )
        return _json(200, answer)

    def _may_introspect(self, client: Client, claims: Mapping[str, Any]) -> bool:
        return claims["client_id"] == client.client_id or client.client_id in self.introspect_any

    def _revocation(self, client: Client, form: Mapping[str, str]) -> Reply | Awaitable[Reply]:
        claims = self._verified(form)
        # RFC 7009 §2.2: an invalid, expired or unknown token gets the same 200 as a revoked one.
        # A token of another client is left alone, with the same answer.
        if claims is None or claims["client_id"] != client.client_id:
            return _json(200, {})
        return self._record_revocation(claims)

    async def _record_revocation(self, claims: Mapping[str, Any]) -> Reply:
        await self.state.revoke(claims["jti"], float(claims["exp"]) + self.policy.leeway)
        log.info("revoked access token %s of client %s", claims["jti"], claims["client_id"])
        return _json(200, {})


def _public_json(body: bytes, content_type: str) -> Reply:
    headers = Headers(
        [
            ("content-type", content_type),
            ("cache-control", "public, max-age=60"),
            ("access-control-allow-origin", "*"),
        ]
    )
    return Reply(200, headers, body)


class _Call:
    """Adapts a bound method to the :class:`~portico.gateway.endpoints.Endpoint` protocol."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Exchange, bytes], Reply | Awaitable[Reply]]) -> None:
        self._fn = fn

    def handle(self, exchange: Exchange, body: bytes) -> Reply | Awaitable[Reply]:
        return self._fn(exchange, body)


def oauth_endpoints(config: PorticoConfig, extensions: Extensions) -> Sequence[BuiltinEndpoint]:
    """The authorization server's endpoints, when the config has ``identity.oauth``."""
    settings = config.identity.oauth
    if settings is None:
        return ()
    state = extensions.oauth
    if state is None:
        raise ValueError("identity.oauth needs the OAuth state that `portico serve` provides")
    signing = state.keyring.signing
    if signing is None or signing.algorithm != settings.signing_algorithm:
        state.ensure_signing_key(settings)
    clients = clients_from_config(config, state.remote_key_sets)
    introspect_any = frozenset(
        consumer.oauth.client_id
        for tenant in config.tenants.values()
        for consumer in tenant.consumers.values()
        if consumer.oauth is not None and consumer.oauth.introspect_any
    )
    return AuthorizationServer(settings, clients, state, introspect_any).endpoints()


ENDPOINTS = EndpointProvider(oauth_endpoints)
"""The authorization server's endpoints, as ``assembly.ENDPOINTS`` names them."""
