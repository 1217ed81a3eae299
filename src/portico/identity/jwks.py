"""Public keys published as a JWK Set (RFC 7517) at a URL.

:class:`RemoteKeySet` keeps the JWKS of a URL (an external identity provider's, or a client's
``jwks_uri``) in memory, as a :class:`~portico.identity.keyset.KeySet`: fetched on first use,
again when it is older than its TTL, and when a token names a ``kid`` it does not know -- but never
more than once per ``min_refresh_interval``, so a flood of tokens with made-up ``kid`` values
cannot turn into a flood of requests to the identity provider. Concurrent requests share one
fetch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from portico.identity.keyset import JWKSError, KeySet

# httpx (and what it imports) is loaded on the first fetch.
if TYPE_CHECKING:
    import httpx
    from jwt import PyJWK

log = logging.getLogger("portico.identity.jwks")

MAX_JWKS_BYTES = 512 * 1024
FETCH_TIMEOUT = 5.0


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
