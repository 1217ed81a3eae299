"""A JWK Set (RFC 7517) as Portico reads one: parsed once, its keys picked by ``kid`` and
algorithm and bound to PyJWT's keys when first used.

Apart from :mod:`portico.identity.jwks` (the sets fetched from a URL), so that ``portico check``
validates a JWK Set without the event loop and the fetching code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "JWKSError",
    "KeySet",
    "key_type_for",
    "usable_key_count",
]

log = logging.getLogger("portico.identity.jwks")

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The algorithms a public key can verify. HMAC and ``none`` are never accepted: a JWKS holds
public keys, and an HMAC "verified" with a public key proves nothing."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "EdDSA": "Ed25519"}


class JWKSError(Exception):
    """A JWK Set could not be fetched or is not valid."""


def key_type_for(algorithm: str) -> str:
    return _KEY_TYPES[algorithm[:2]]


@dataclass(frozen=True, slots=True)
class KeySet:
    """An immutable JWK Set; keys are bound to one algorithm each when they are first used."""

    keys: tuple[Mapping[str, Any], ...]
    _bound: dict[tuple[str | None, str], tuple[PyJWK, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_jwks(cls, document: Any) -> KeySet:
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise JWKSError('a JWK Set is a JSON object with a "keys" array')
        keys = tuple(
            k
            for k in document["keys"]
            if isinstance(k, Mapping) and k.get("use", "sig") == "sig" and k.get("kty") != "oct"
        )
        return cls(keys)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(str(k["kid"]) for k in self.keys if "kid" in k)

    def candidates(self, kid: str | None, algorithm: str) -> tuple[PyJWK, ...]:
        """The keys that may have signed a token with this ``kid`` and ``alg``.

        Without a ``kid`` every key of the right type is a candidate. Empty when none fits.
        """
        cached = self._bound.get((kid, algorithm))
        if cached is not None:
            return cached
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            return ()
        found = tuple(_bind(k, algorithm) for k in self.keys if _fits(k, kid, algorithm))
        bound = tuple(k for k in found if k is not None)
        if len(self._bound) < 1024:  # unknown kids are not worth remembering without bound
            self._bound[(kid, algorithm)] = bound
        return bound


def _fits(jwk: Mapping[str, Any], kid: str | None, algorithm: str) -> bool:
    if kid is not None and jwk.get("kid") != kid:
        return False
    if jwk.get("kty") != key_type_for(algorithm):
        return False
    if "alg" in jwk and jwk["alg"] != algorithm:
        return False
    curve = _CURVES.get(algorithm)
    return curve is None or jwk.get("crv") == curve


def _bind(jwk: Mapping[str, Any], algorithm: str) -> PyJWK | None:
    try:
        return PyJWK(dict(jwk), algorithm)
    except PyJWKError as exc:
        log.warning("ignoring an unusable JWK (kid %r): %s", jwk.get("kid"), exc)
        return None


def usable_key_count(document: Any) -> int:
    """How many keys of a JWK Set can verify signatures (for config checks)."""
    try:
        keys = KeySet.from_jwks(document).keys
    except JWKSError:
        return 0
    count = 0
    for jwk in keys:
        try:
            PyJWK(dict(jwk))
        except PyJWKError:
            continue
        count += 1
    return count
