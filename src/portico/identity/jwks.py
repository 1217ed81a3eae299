"""Public keys published as a JWK Set (RFC 7517): parsed once, picked by ``kid`` and algorithm.

:class:`KeySet` is an immutable JWKS. :class:`RemoteKeySet` keeps the JWKS of a URL (an external
identity provider's, or a client's ``jwks_uri``) in memory: fetched on first use, again when it is
older than its TTL, and when a token names a ``kid`` it does not know -- but never more than once
per ``min_refresh_interval``, so a flood of tokens with made-up ``kid`` values cannot turn into a
flood of requests to the identity provider. Concurrent requests share one fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

# httpx (and what it imports) is loaded on the first fetch: `portico check` imports this module to
# validate JWK Sets and never fetches one.
if TYPE_CHECKING:
    import httpx

log = logging.getLogger("portico.identity.jwks")

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The algorithms a public key can verify. HMAC and ``none`` are never accepted: a JWKS holds
public keys, and an HMAC "verified" with a public key proves nothing."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "EdDSA": "Ed25519"}
MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT = 5.0


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


class RemoteKeySet:
    """The JWK Set at a URL, kept in memory and refreshed under a rate limit."""

    def __init__(
        self,
        uri: str,
        *,
        ttl: float,
        min_refresh_interval: float,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.uri = uri
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.keys: KeySet | None = None
        self._clock = clock
        self._transport = transport
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None

    def lookup(self, kid: str | None, algorithm: str) -> tuple[PyJWK, ...] | None:
        """The candidate keys, or ``None`` when a :meth:`refresh` must be awaited first.

        An empty tuple means: no such key, and it is too soon to ask the server again.
        """
        now = self._clock()
        may_fetch = self._inflight is not None or (
            self._attempted_at is None or now - self._attempted_at >= self.min_refresh_interval
        )
        if self.keys is None or now - self._fetched_at >= self.ttl:
            if may_fetch:
                return None
            # The server is failing or was asked moments ago: go on with what we have.
            return self.keys.candidates(kid, algorithm) if self.keys is not None else ()
        found = self.keys.candidates(kid, algorithm)
        if found or not may_fetch or (kid is not None and kid in self.keys.kids):
            return found
        return None

    async def refresh(self) -> None:
        """Fetch the JWK Set once, however many requests wait for it."""
        task = self._inflight
        if task is None:
            self._attempted_at = self._clock()
            task = self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetched)
        # A waiter that is cancelled (its client went away) must not cancel the others' fetch.
        await asyncio.shield(task)

    def current(self, kid: str | None, algorithm: str) -> tuple[PyJWK, ...]:
        """The candidate keys as they are now, without asking the server (after a refresh)."""
        return self.keys.candidates(kid, algorithm) if self.keys is not None else ()

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch(self) -> None:
        import httpx

        try:
            async with httpx.AsyncClient(
                timeout=FETCH_TIMEOUT, transport=self._transport, follow_redirects=False
            ) as client:
                response = await client.get(self.uri, headers={"accept": "application/json"})
            if response.status_code != 200:
                raise JWKSError(f"HTTP {response.status_code}")
            if len(response.content) > MAX_JWKS_BYTES:
                raise JWKSError(f"larger than {MAX_JWKS_BYTES} bytes")
            keys = KeySet.from_jwks(json.loads(response.content))
        except (httpx.HTTPError, JWKSError, ValueError) as exc:
            log.warning("could not fetch the JWK Set at %s: %s", self.uri, exc)
            return
        self.keys = keys
        self._fetched_at = self._clock()


class RemoteKeySets:
    """One :class:`RemoteKeySet` per URL and settings, shared by every snapshot that uses it."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._sets: dict[tuple[str, float, float], RemoteKeySet] = {}
        self._transport = transport

    def get(self, uri: str, *, ttl: float, min_refresh_interval: float) -> RemoteKeySet:
        key = (uri, ttl, min_refresh_interval)
        found = self._sets.get(key)
        if found is None:
            found = self._sets[key] = RemoteKeySet(
                uri, ttl=ttl, min_refresh_interval=min_refresh_interval, transport=self._transport
            )
        return found


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
