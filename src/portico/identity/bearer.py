"""Bearer tokens in requests (RFC 6750 §2.1), shared by the ``oauth`` and ``jwt:*`` methods.

Several methods accept ``Authorization: Bearer``. When a route accepts more than one, each
method claims only tokens it could have issued: :func:`peek_issuer` reads the ``iss`` of a JWT
without verifying anything, so the method of the right issuer answers. A token whose issuer cannot
be read is claimed by every bearer method, and rejected by the first one.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Awaitable

from portico.core.http import REALM
from portico.gateway.exchange import Exchange
from portico.identity.authn import AuthResult, Rejected
from portico.identity.tokencache import VerifiedToken, VerifiedTokenCache

CHALLENGE = f'Bearer realm="{REALM}"'
INVALID_TOKEN = f'Bearer realm="{REALM}", error="invalid_token"'


class BearerAuthenticator:
    """What the bearer methods share: finding the token, claiming it by issuer, the cache.

    A subclass sets ``method``, ``_issuer``, ``_cache`` and ``_hide``, and implements
    :meth:`_check` with its own verification; ``known`` is the cached verification of the token,
    or whether the token names this issuer when it is not cached.
    """

    __slots__ = ("_cache", "_hide", "_issuer", "method")

    method: str
    _issuer: str
    _cache: VerifiedTokenCache
    _hide: bool

    @property
    def needs_body(self) -> bool:
        return False

    @property
    def accept_signature(self) -> str | None:
        return None

    def challenge(self) -> str:
        return CHALLENGE

    def present(self, exchange: Exchange) -> bool:
        found = find_bearer(exchange.headers.items)
        if found is None:
            return False
        known, _ = self._cache.find(found[1], time.time())
        return known is not None or self._names_issuer(found[1])

    def authenticate(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult]:
        found = find_bearer(exchange.headers.items)
        if found is None:
            return Rejected(INVALID_TOKEN, "no bearer token")
        index, token = found
        known, digest = self._cache.find(token, time.time())
        return self._check(exchange, index, token, digest, known)

    def identify(self, exchange: Exchange) -> AuthResult | Awaitable[AuthResult] | None:
        """``present`` and ``authenticate`` in one pass (the ``auth`` policy prefers it):
        ``None`` when the request has no bearer token this method's issuer could have made."""
        found = find_bearer(exchange.headers.items)
        if found is None:
            return None
        index, token = found
        known, digest = self._cache.find(token, time.time())
        if known is None and not self._names_issuer(token):
            return None
        return self._check(exchange, index, token, digest, known if known is not None else True)

    def _accept(self, exchange: Exchange, index: int, verified: VerifiedToken) -> AuthResult:
        """The identity of a verified token, its field removed first unless the route keeps it."""
        if self._hide:
            # Nothing else touches the request's fields while its auth policy runs, awaited or
            # not, so the position found at the start is still the token's.
            del exchange.headers.items[index]
        return verified.identity()

    def _names_issuer(self, token: str) -> bool:
        """Whether a token not verified before names this issuer (or no readable issuer)."""
        issuer = peek_issuer(token)
        return issuer is None or issuer == self._issuer

    def _check(
        self,
        exchange: Exchange,
        index: int,
        token: str,
        digest: bytes,
        known: VerifiedToken | bool | None,
    ) -> AuthResult | Awaitable[AuthResult]:
        """Verify (or accept the already verified ``known``). ``digest`` is the token's SHA-256,
        to cache it once verified; it is empty when ``known`` is a :class:`VerifiedToken`."""
        raise NotImplementedError


def find_bearer(items: list[tuple[str, str]]) -> tuple[int, str] | None:
    """The position of the ``Authorization: Bearer`` field in the request's fields, and its
    token; ``None`` when there is none."""
    for index, (name, value) in enumerate(items):
        if name == "authorization" and value[:7].lower() == "bearer ":
            token = value[7:].strip()
            return (index, token) if token else None
    return None


def peek_issuer(token: str) -> str | None:
    """The ``iss`` claim of a JWT, unverified: only to choose which method verifies it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    segment = parts[1]
    try:
        payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None
