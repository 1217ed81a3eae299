"""The verified-token cache: remembered until expiry, bounded in size."""

from __future__ import annotations

from portico.identity.tokencache import (
    MAX_RECENT,
    VerifiedToken,
    VerifiedTokenCache,
    token_digest,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(consumer: str, valid_until: float) -> VerifiedToken:
    return VerifiedToken(
        consumer, "acme", frozenset({"read"}), "oauth", {"sub": consumer}, valid_until
    )


def test_a_token_is_found_until_it_expires() -> None:
    cache = VerifiedTokenCache()
    digest = token_digest("token-a")
    cache.put(digest, entry("a", valid_until=100.0))
    found = cache.get(digest, now=99.0)
    assert found is not None and found.consumer == "a"
    assert cache.get(digest, now=100.0) is None
    assert len(cache) == 0


def test_each_request_gets_its_own_identity_object() -> None:
    verified = entry("a", valid_until=100.0)
    first, second = verified.identity(), verified.identity()
    first.claims["note"] = "changed by a policy"
    assert second.claims == {"sub": "a"}
    assert (first.consumer, first.tenant, first.scopes) == ("a", "acme", frozenset({"read"}))


def test_a_full_cache_drops_expired_entries_before_live_ones() -> None:
    clock = Clock(50.0)
    cache = VerifiedTokenCache(max_entries=3, clock=clock)
    cache.put(token_digest("expired"), entry("expired", valid_until=10.0))
    cache.put(token_digest("live-1"), entry("live-1", valid_until=100.0))
    cache.put(token_digest("live-2"), entry("live-2", valid_until=100.0))
    cache.put(token_digest("new"), entry("new", valid_until=100.0))
    assert len(cache) == 3
    for name in ("live-1", "live-2", "new"):
        assert cache.get(token_digest(name), now=50.0) is not None


def test_a_cache_full_of_live_entries_drops_the_oldest() -> None:
    cache = VerifiedTokenCache(max_entries=2, clock=Clock(0.0))
    for name in ("first", "second", "third"):
        cache.put(token_digest(name), entry(name, valid_until=100.0))
    assert len(cache) == 2
    assert cache.get(token_digest("first"), now=1.0) is None
    assert cache.get(token_digest("third"), now=1.0) is not None


def test_a_recent_token_is_found_by_itself_until_it_expires() -> None:
    cache = VerifiedTokenCache()
    cache.remember("token-a", entry("a", valid_until=100.0))
    found = cache.recent("token-a", now=99.0)
    assert found is not None and found.consumer == "a"
    assert cache.recent("token-b", now=99.0) is None
    assert cache.recent("token-a", now=100.0) is None
    assert cache.recent("token-a", now=50.0) is None  # expired entries are gone, not hidden


def test_clearing_the_cache_forgets_recent_tokens_too() -> None:
    cache = VerifiedTokenCache()
    cache.put(token_digest("token-a"), entry("a", valid_until=100.0))
    cache.remember("token-a", entry("a", valid_until=100.0))
    cache.clear()
    assert cache.recent("token-a", now=1.0) is None
    assert cache.get(token_digest("token-a"), now=1.0) is None


def test_the_recent_table_is_bounded() -> None:
    cache = VerifiedTokenCache()
    for number in range(MAX_RECENT + 10):
        cache.remember(f"token-{number}", entry(str(number), valid_until=100.0))
    remembered = [n for n in range(MAX_RECENT + 10) if cache.recent(f"token-{n}", 1.0) is not None]
    assert 0 < len(remembered) <= MAX_RECENT
    assert cache.recent(f"token-{MAX_RECENT + 9}", 1.0) is not None  # the newest is kept
