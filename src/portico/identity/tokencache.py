"""Verified bearer tokens, remembered by hash until they expire.

Verifying a JWT signature costs tens of microseconds; a client sends the same token with every
request until it expires. The first request verifies it, the following ones find it here with one
SHA-256 and one dict lookup. Only tokens that verified are remembered, under the SHA-256 of the
token, and the cache is bounded: when it is full, expired entries go first, then the oldest.

In front of it, the tokens most recently found in the cache (at most ``MAX_RECENT``) are also
kept by the token itself, in memory only: a token sent again then costs one dict lookup, not a
SHA-256 of its ~500-900 bytes. They go whenever the cache is cleared (a signing key dropped),
expire like the rest, and are dropped all at once when the table is full; the hash-keyed table
stays the one that holds many tokens, 32 bytes of key each.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from portico.gateway.exchange import Identity

K = TypeVar("K", bytes, str)

DEFAULT_MAX_ENTRIES = 100_000
MAX_RECENT = 1024
_SWEEP_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a verified token grants, and until when."""

    consumer: str
    tenant: str | None
    scopes: frozenset[str]
    method: str
    claims: dict[str, Any]
    valid_until: float
    """Epoch seconds after which the token is no longer accepted (its ``exp`` plus the leeway)."""
    jti: str | None = None

    def identity(self) -> Identity:
        # A fresh Identity per request: policies may annotate it, the cached entry stays as is.
        return Identity(self.consumer, self.tenant, self.scopes, self.method, dict(self.claims))


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("latin-1", "replace")).digest()


class VerifiedTokenCache:
    __slots__ = ("_clock", "_entries", "_max_entries", "_next_sweep", "_recent")

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, clock: Callable[[], float] = time.time
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: dict[bytes, VerifiedToken] = {}
        self._recent: dict[str, VerifiedToken] = {}
        self._max_entries = max_entries
        self._clock = clock
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, token: str, now: float) -> tuple[VerifiedToken | None, bytes]:
        """The entry of ``token`` if it verified before, and the token's digest: by the token
        itself when it was found lately (the digest is then not computed, and empty), else by
        its SHA-256 (and then remembered by the token for the next time)."""
        entry = self.recent(token, now)
        if entry is not None:
            return entry, b""
        digest = token_digest(token)
        entry = self.get(digest, now)
        if entry is not None:
            self.remember(token, entry)
        return entry, digest

    def get(self, digest: bytes, now: float) -> VerifiedToken | None:
        return _live(self._entries, digest, now)

    def put(self, digest: bytes, entry: VerifiedToken) -> None:
        entries = self._entries
        if digest not in entries and len(entries) >= self._max_entries:
            now = self._clock()
            if now >= self._next_sweep:
                # At most one full scan per interval, so a flood of new tokens stays O(1) each.
                self._next_sweep = now + _SWEEP_INTERVAL
                for key in [k for k, v in entries.items() if now >= v.valid_until]:
                    del entries[key]
            if len(entries) >= self._max_entries:
                del entries[next(iter(entries))]
        entries[digest] = entry

    def recent(self, token: str, now: float) -> VerifiedToken | None:
        """The entry of a token found in the cache lately, looked up by the token itself."""
        return _live(self._recent, token, now)

    def remember(self, token: str, entry: VerifiedToken) -> None:
        recent = self._recent
        if len(recent) >= MAX_RECENT:
            recent.clear()
        recent[token] = entry

    def clear(self) -> None:
        self._entries.clear()
        self._recent.clear()


def _live(table: dict[K, VerifiedToken], key: K, now: float) -> VerifiedToken | None:
    """``table[key]`` while it is valid; an expired entry is removed on the way."""
    entry = table.get(key)
    if entry is None:
        return None
    if now >= entry.valid_until:
        del table[key]
        return None
    return entry
