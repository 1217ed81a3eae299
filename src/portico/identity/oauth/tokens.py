"""JWT access tokens (RFC 9068): issued by the token endpoint, verified by the data plane.

The header carries ``typ: at+jwt`` and the ``kid`` of the signing key; the claims are ``iss``,
``sub`` (the consumer), ``aud``, ``exp``, ``iat``, ``jti``, ``client_id``, ``scope`` and, when
the consumer belongs to one, ``tenant``. Verification accepts only the algorithm bound to the key
the ``kid`` names, so ``alg: none`` and HS256-with-the-public-key tokens fail like any forgery.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import jwt

from portico.config.model import OAuthServer
from portico.identity.oauth.keys import KeyRing, SigningKey

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
DEFAULT_LEEWAY = 30.0
"""Seconds of clock difference tolerated between the process that issued a token and the one
verifying it."""


class InvalidAccessToken(Exception):
    """Not an access token this server issued and still accepts; the message is for logs only."""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What the server puts in tokens and demands of them."""

    issuer: str
    audience: str
    ttl: int
    leeway: float = DEFAULT_LEEWAY

    def issue(
        self,
        key: SigningKey,
        *,
        consumer: str,
        tenant: str | None,
        client_id: str,
        scopes: Collection[str],
        now: int,
    ) -> IssuedToken:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": consumer,
            "aud": self.audience,
            "exp": now + self.ttl,
            "iat": now,
            "jti": secrets.token_urlsafe(18),
            "client_id": client_id,
        }
        if scopes:
            claims["scope"] = " ".join(sorted(scopes))
        if tenant is not None:
            claims["tenant"] = tenant
        headers = {"typ": "at+jwt", "kid": key.kid}
        token = jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers=headers)
        return IssuedToken(token, claims, self.ttl)

    def verify(self, token: str, keys: KeyRing) -> dict[str, Any]:
        """The claims of a valid token signed by a published key, or :class:`InvalidAccessToken`.

        Revocation is not checked here: the caller knows the revoked ``jti`` values.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidAccessToken(f"malformed token: {exc}") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidAccessToken(f"typ {typ!r} is not at+jwt")
        kid = header.get("kid")
        key = keys.by_kid.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidAccessToken(f"no published key has kid {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.verifier,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidAccessToken(f"token rejected: {exc}") from None
        for name in ("sub", "jti", "client_id"):
            if not isinstance(claims[name], str):
                raise InvalidAccessToken(f"claim {name!r} is not a string")
        if not isinstance(claims.get("scope", ""), str):
            raise InvalidAccessToken("claim 'scope' is not a string")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidAccessToken("claim 'tenant' is not a string")
        return claims


def token_policy(settings: OAuthServer) -> TokenPolicy:
    """The token policy of the configured server; the audience defaults to the issuer."""
    return TokenPolicy(
        issuer=settings.issuer,
        audience=settings.audience or settings.issuer,
        ttl=max(1, round(settings.token_ttl)),
    )
