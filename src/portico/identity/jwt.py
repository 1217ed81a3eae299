"""The ``jwt:<provider>`` method: JWTs issued by an external identity provider.

Tokens are verified against the provider's JWKS (see :mod:`portico.identity.jwks`): signature
with an allow-listed asymmetric algorithm, ``iss``, ``aud``, ``exp`` and ``nbf`` with the
provider's clock skew. Claims are mapped to the consumer, tenant and scopes by the provider's
``claims`` settings; a dotted name (``realm_access.roles``) reaches into nested objects.

Once verified, the ``Authorization`` field is removed from the request sent upstream unless the
route sets ``jwt: {hide_credentials: false}``.

The common path is synchronous: the key set is in memory and a token already verified is found in
the verified-token cache. Only a JWKS fetch (first use, TTL expired, unknown ``kid``) makes
:meth:`ProviderAuthenticator.authenticate` return an awaitable.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

import jwt
from jwt import PyJWK

from portico.config.model import ClaimMapping, IdentityProvider
from portico.gateway.exchange import Exchange
from portico.identity.authn import AuthResult, MethodSettings, Rejected
from portico.identity.bearer import INVALID_TOKEN, BearerAuthenticator
from portico.identity.jwks import RemoteKeySet, RemoteKeySets
from portico.identity.keyset import ASYMMETRIC_ALGORITHMS
from portico.identity.method_settings import BearerSettings
from portico.identity.tokencache import VerifiedToken, VerifiedTokenCache

if TYPE_CHECKING:
    from portico.identity.context import BuildContext

__all__ = ["ProviderAuthenticator", "Settings", "build_authenticator", "claims_to_identity"]

Settings = BearerSettings
"""The route options of the method (``jwt: {hide_credentials: false}``)."""


_FIELD_VALUE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,1022}[\x21-\x7e])?\Z")
"""Printable ASCII, inner spaces allowed, at most 1,024 characters."""
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,256}\Z")
"""RFC 6749 §3.3 scope-token."""


class ClaimError(ValueError):
    """The token verified, but its claims do not say who the caller is."""


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def claims_to_identity(
    claims: Mapping[str, Any], mapping: ClaimMapping
) -> tuple[str, str | None, frozenset[str]]:
    """``(consumer, tenant, scopes)`` from verified claims.

    These values go upstream as ``X-Portico-*`` fields, and the identity provider may let its
    users shape them (a name, an e-mail, a custom attribute): a value that is not a plain
    printable ASCII field value, or a scope that is not an RFC 6749 scope token, refuses the
    token rather than reach the request head (CR LF there would inject fields).
    """
    consumer = _claim(claims, mapping.consumer)
    if not isinstance(consumer, str) or not consumer:
        raise ClaimError(f"claim {mapping.consumer!r} is missing or not a string")
    if not _FIELD_VALUE.match(consumer):
        raise ClaimError(f"claim {mapping.consumer!r} holds characters a header cannot carry")
    tenant = _claim(claims, mapping.tenant) if mapping.tenant else None
    if tenant is not None and not isinstance(tenant, str):
        raise ClaimError(f"claim {mapping.tenant!r} is not a string")
    if tenant and not _FIELD_VALUE.match(tenant):
        raise ClaimError(f"claim {mapping.tenant!r} holds characters a header cannot carry")
    raw = _claim(claims, mapping.scopes)
    if raw is None:
        scopes: frozenset[str] = frozenset()
    elif isinstance(raw, str):
        scopes = frozenset(raw.split(" "))
    elif isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        scopes = frozenset(raw)
    else:
        raise ClaimError(f"claim {mapping.scopes!r} is neither a string nor a list of strings")
    scopes = scopes - {""}
    if not all(_SCOPE_TOKEN.match(scope) for scope in scopes):
        raise ClaimError(f"claim {mapping.scopes!r} holds a scope that is not a scope token")
    return consumer, tenant or None, scopes


class ProviderAuthenticator(BearerAuthenticator):
    """Verifies bearer JWTs of one external issuer."""

    __slots__ = ("_algorithms", "_keys", "_settings")

    def __init__(
        self,
        name: str,
        settings: IdentityProvider,
        keys: RemoteKeySet,
        cache: VerifiedTokenCache | None = None,
        options: BearerSettings | None = None,
    ) -> None:
        unsafe = set(settings.algorithms) - ASYMMETRIC_ALGORITHMS
        if unsafe:
            raise ValueError(
                f"identity provider {name!r}: algorithms {sorted(unsafe)} are not accepted; "
                f"use asymmetric ones: {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}"
            )
        self.method = f"jwt:{name}"
        self._settings = settings
        self._issuer = settings.issuer
        self._algorithms = frozenset(settings.algorithms)
        self._keys = keys
        self._cache = cache if cache is not None else VerifiedTokenCache()
        self._hide = (options or BearerSettings()).hide_credentials

    def _check(
        self,
        exchange: Exchange,
        index: int,
        token: str,
        digest: bytes,
        known: VerifiedToken | bool | None,
    ) -> AuthResult | Awaitable[AuthResult]:
        if isinstance(known, VerifiedToken):
            return self._accept(exchange, index, known)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            return Rejected(INVALID_TOKEN, f"malformed token: {exc}")
        algorithm = header.get("alg")
        kid = header.get("kid")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            return Rejected(INVALID_TOKEN, f"algorithm {algorithm!r} is not allowed")
        if kid is not None and not isinstance(kid, str):
            return Rejected(INVALID_TOKEN, "kid is not a string")
        candidates = self._keys.lookup(kid, algorithm)
        if candidates is None:
            return self._after_refresh(exchange, index, token, digest, kid, algorithm)
        return self._verify(exchange, index, token, digest, candidates)

    async def _after_refresh(
        self,
        exchange: Exchange,
        index: int,
        token: str,
        digest: bytes,
        kid: str | None,
        algorithm: str,
    ) -> AuthResult:
        await self._keys.refresh()
        return self._verify(exchange, index, token, digest, self._keys.current(kid, algorithm))

    def _verify(
        self,
        exchange: Exchange,
        index: int,
        token: str,
        digest: bytes,
        candidates: tuple[PyJWK, ...],
    ) -> AuthResult:
        if not candidates:
            return Rejected(INVALID_TOKEN, "no key of the issuer's JWKS matches kid and alg")
        settings = self._settings
        claims: dict[str, Any] | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[key.algorithm_name],
                    audience=list(settings.audiences),
                    issuer=settings.issuer,
                    leeway=settings.clock_skew,
                    options={"require": ["exp", "iss", "aud"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue  # a kid-less token: try the next key of the right type
            except jwt.InvalidTokenError as exc:
                return Rejected(INVALID_TOKEN, f"token rejected: {exc}")
        if claims is None:
            return Rejected(INVALID_TOKEN, "signature verification failed")
        try:
            consumer, tenant, scopes = claims_to_identity(claims, settings.claims)
        except ClaimError as exc:
            return Rejected(INVALID_TOKEN, str(exc))
        jti = claims.get("jti")
        verified = VerifiedToken(
            consumer=consumer,
            tenant=tenant,
            scopes=scopes,
            method=self.method,
            claims=claims,
            valid_until=float(claims["exp"]) + settings.clock_skew,
            jti=jti if isinstance(jti, str) else None,
        )
        self._cache.put(digest, verified)
        return self._accept(exchange, index, verified)


def build_authenticator(
    settings: MethodSettings[BearerSettings], context: BuildContext
) -> ProviderAuthenticator:
    """``settings`` names the provider: the route lists the method as ``jwt:<provider>``."""
    name = settings.provider
    if not name:
        raise ValueError("the jwt method names its provider: jwt:<name of identity.providers>")
    provider = context.config.identity.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(context.config.identity.providers)) or "none"
        raise ValueError(f"unknown identity provider {name!r} (identity.providers: {known})")
    state = context.extensions.oauth
    if state is not None:
        key_sets, cache = state.remote_key_sets, state.cache_for(("jwt", name, provider))
    else:
        key_sets, cache = RemoteKeySets(), VerifiedTokenCache()
    keys = key_sets.get(
        provider.jwks_uri,
        ttl=provider.jwks_cache_ttl,
        min_refresh_interval=provider.jwks_min_refresh_interval,
    )
    return ProviderAuthenticator(name, provider, keys, cache, settings.options)
