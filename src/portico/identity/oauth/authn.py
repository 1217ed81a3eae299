"""The ``oauth`` method: access tokens issued by Portico's own authorization server.

A request presents ``Authorization: Bearer <jwt>``. The token must carry ``typ: at+jwt``, be
signed by a published key of the server (current or retired; the key ring is in memory), name
the configured issuer and audience, be within its ``exp`` and ``iat`` (with a small leeway), and
its ``jti`` must not be revoked. A token that passed is remembered by hash until it expires, so
the following requests with it cost a hash and two dictionary lookups (the cache, the revoked
ids). Its claims become the identity: consumer ``sub``, ``tenant``, scopes from ``scope``. The
``Authorization`` field is then removed from the request unless the route sets
``oauth: {hide_credentials: false}``.

When the consumer disappears from the identity directory (removed from the config), its tokens
stop working at once, without waiting for them to expire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from portico.config.model import OAuthServer
from portico.gateway.exchange import Exchange
from portico.identity.authn import AuthResult, MethodSettings, Rejected
from portico.identity.bearer import INVALID_TOKEN, BearerAuthenticator
from portico.identity.method_settings import BearerSettings
from portico.identity.oauth.state import OAuthState
from portico.identity.oauth.tokens import InvalidAccessToken, TokenPolicy, token_policy
from portico.identity.tokencache import VerifiedToken, VerifiedTokenCache

if TYPE_CHECKING:
    from portico.identity.context import BuildContext
    from portico.identity.state import IdentityState

__all__ = ["OAuthAuthenticator", "Settings", "build_authenticator"]

METHOD_NAME = "oauth"
Settings = BearerSettings
"""The route options of the method (``oauth: {hide_credentials: false}``)."""


class OAuthAuthenticator(BearerAuthenticator):
    """Verifies access tokens Portico's own authorization server issued."""

    __slots__ = ("_directory", "_policy", "_state")

    def __init__(
        self,
        state: OAuthState,
        policy: TokenPolicy,
        cache: VerifiedTokenCache,
        directory: IdentityState | None = None,
        settings: BearerSettings | None = None,
    ) -> None:
        self.method = METHOD_NAME
        self._hide = (settings or BearerSettings()).hide_credentials
        self._state = state
        self._policy = policy
        self._issuer = policy.issuer
        self._cache = cache
        self._directory = directory

    def _check(
        self,
        exchange: Exchange,
        index: int,
        token: str,
        digest: bytes,
        verified: VerifiedToken | bool | None,
    ) -> AuthResult:
        if not isinstance(verified, VerifiedToken):
            try:
                claims = self._policy.verify(token, self._state.keyring)
            except InvalidAccessToken as exc:
                return Rejected(INVALID_TOKEN, str(exc))
            verified = _verified(claims, self._policy.leeway)
            self._cache.put(digest, verified)
        if verified.jti is not None and verified.jti in self._state.revoked:
            return Rejected(INVALID_TOKEN, f"token {verified.jti} is revoked")
        directory = self._directory
        if directory is not None and verified.consumer not in directory.directory.consumers:
            return Rejected(INVALID_TOKEN, f"consumer {verified.consumer!r} no longer exists")
        return self._accept(exchange, index, verified)


def _verified(claims: dict[str, Any], leeway: float) -> VerifiedToken:
    return VerifiedToken(
        consumer=claims["sub"],
        tenant=claims.get("tenant"),
        scopes=frozenset(claims.get("scope", "").split()),
        method=METHOD_NAME,
        claims=claims,
        valid_until=float(claims["exp"]) + leeway,
        jti=claims["jti"],
    )


def build_authenticator(
    settings: MethodSettings[BearerSettings], context: BuildContext
) -> OAuthAuthenticator:
    server: OAuthServer | None = context.config.identity.oauth
    if server is None:
        raise ValueError("the oauth method needs identity.oauth (Portico's authorization server)")
    state = context.extensions.oauth
    if state is None:
        raise ValueError("the oauth method needs the OAuth state that `portico serve` provides")
    policy = token_policy(server)
    directory = context.extensions.identity
    return OAuthAuthenticator(
        state,
        policy,
        state.cache_for(("oauth", policy.issuer, policy.audience)),
        directory,
        settings.options,
    )
