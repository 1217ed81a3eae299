"""The live state of the authorization server, shared by every runtime snapshot of a process.

It holds in memory what the data plane consults per request -- the key ring (which key signs,
which keys verify) and the revoked token ids -- and keeps it current: :meth:`OAuthState.run`
polls the identity change counter every half second and reloads when it moved, so a rotation or
a revocation made by any process (or by ``portico oauth rotate-key``) is in effect everywhere
within a second. Store calls run in the default thread pool, never on the event loop.

It also keeps what should outlive a config reload: the verified-token caches and the JWK Sets of
external identity providers and of clients.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from portico.config.model import OAuthServer
from portico.core.errors import PorticoError
from portico.identity.jwks import RemoteKeySets
from portico.identity.oauth.keys import KeyRing, SigningKey
from portico.identity.oauth.tokens import DEFAULT_LEEWAY
from portico.identity.tokencache import VerifiedTokenCache

# The store (SQLAlchemy) is imported when a state is made: `portico check` imports this module
# with the `oauth` authentication method and never opens a database.
if TYPE_CHECKING:
    from portico.identity.oauth.repository import KeyRotation
    from portico.store.database import Database
    from portico.store.secrets import Secrets

log = logging.getLogger("portico.identity.oauth")

POLL_INTERVAL = 0.5
MAINTENANCE_INTERVAL = 600.0
PROPAGATION_MARGIN = 60.0
"""Seconds added to how long a retired key stays published: another process may sign with it
until it sees the rotation (one poll), and clocks differ a little."""

T = TypeVar("T")


def retired_key_lifetime(settings: OAuthServer) -> timedelta:
    """How long a retired key stays published: past the expiry of the last token it signed."""
    return timedelta(seconds=settings.token_ttl + DEFAULT_LEEWAY + PROPAGATION_MARGIN)


class _StoreRead(NamedTuple):
    version: int
    keys: list[SigningKey] | None
    """``None`` when they could not be opened: ``unreadable`` says why."""
    revoked: dict[str, float]
    unreadable: PorticoError | None = None


class OAuthState:
    def __init__(
        self,
        database: Database,
        secrets: Secrets,
        *,
        poll_interval: float = POLL_INTERVAL,
        remote_key_sets: RemoteKeySets | None = None,
    ) -> None:
        from portico.identity.oauth.repository import ClientAssertions, RevokedTokens, SigningKeys
        from portico.identity.store import IdentityChanges

        self.database = database
        self.keyring = KeyRing.empty()
        self.revoked: dict[str, float] = {}
        """Revoked ``jti`` -> epoch seconds after which it no longer matters."""
        self.remote_key_sets = remote_key_sets or RemoteKeySets()
        self.poll_interval = poll_interval
        self._keys: list[SigningKey] = []
        self._version: int | None = None
        self._caches: dict[Hashable, VerifiedTokenCache] = {}
        self._signing_keys = SigningKeys(database, secrets)
        self._revocations = RevokedTokens(database)
        self._assertions = ClientAssertions(database)
        self._changes = IdentityChanges(database)
        self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL

    # -- start-up and the CLI (synchronous) ----------------------------------------------------

    def load(self) -> None:
        self._apply(self._read())

    def ensure_signing_key(self, settings: OAuthServer) -> KeyRotation | None:
        """Create the first signing key, or one of the configured algorithm, when there is none.

        Blocks on the store: called at start-up, and on a reload that changed the algorithm.
        """
        rotation = self._signing_keys.rotate(
            settings.signing_algorithm, retired_key_lifetime(settings), only_if_needed=True
        )
        if rotation is not None:
            created = rotation.created
            log.info("created OAuth signing key %s (%s)", created.kid, created.algorithm)
        self.load()
        return rotation

    # -- the data plane ------------------------------------------------------------------------

    def is_revoked(self, jti: str) -> bool:
        return jti in self.revoked

    def cache_for(self, key: Hashable) -> VerifiedTokenCache:
        """The verified-token cache of one way of verifying; the same across reloads."""
        cache = self._caches.get(key)
        if cache is None:
            cache = self._caches[key] = VerifiedTokenCache()
        return cache

    async def revoke(self, jti: str, until: float) -> None:
        await self._in_thread(
            lambda: self._revocations.revoke(jti, datetime.fromtimestamp(until, UTC))
        )
        self.revoked[jti] = until

    async def remember_assertion(self, jti: str, until: float) -> bool:
        return await self._in_thread(
            lambda: self._assertions.remember(jti, datetime.fromtimestamp(until, UTC))
        )

    # -- keeping current -----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll for changes until cancelled."""
        failing: str | None = None
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.refresh()
            except PorticoError as exc:
                # Said in one line (a secrets key missing here, a database away), once until it
                # changes, not at every poll: the keys and revocations in memory serve on, and
                # each poll tries again.
                if str(exc) != failing:
                    log.error(
                        "could not refresh OAuth keys and revocations from the store: %s", exc
                    )
                failing = str(exc)
            except Exception:
                log.exception("could not refresh OAuth keys and revocations from the store")
            else:
                if failing is not None:
                    log.info("OAuth keys and revocations refreshed from the store again")
                failing = None

    async def refresh(self) -> None:
        version = await self._in_thread(self._changes.version)
        if version != self._version:
            self._apply(await self._in_thread(self._read))
        else:
            change = self.keyring.next_change
            if change is not None and datetime.now(UTC) >= change:
                self._rebuild_keyring()
        if time.monotonic() >= self._next_maintenance:
            self._next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
            await self._in_thread(self._purge)
            now = time.time()
            self.revoked = {jti: until for jti, until in self.revoked.items() if until > now}

    def close(self) -> None:
        self.database.dispose()

    def _read(self) -> _StoreRead:
        # The version first: a change committed after it is read is seen at the next poll.
        version = self._changes.version()
        revoked = self._revocations.current()
        try:
            keys = self._signing_keys.published()
        except PorticoError as exc:
            return _StoreRead(version, None, revoked, exc)
        return _StoreRead(version, keys, revoked)

    def _apply(self, read: _StoreRead) -> None:
        """What was read, in effect; raises why the signing keys could not be opened, if so."""
        self.revoked = read.revoked
        if read.keys is None:
            # Keys this process cannot open (its secrets key lacks the one that sealed them):
            # the revocations apply all the same, the keys in memory serve on, and the version
            # is not taken, so that every poll tries the keys again.
            assert read.unreadable is not None
            raise read.unreadable
        self._version = read.version
        self._keys = read.keys
        self._rebuild_keyring()

    def _rebuild_keyring(self) -> None:
        before = set(self.keyring.by_kid)
        self.keyring = KeyRing.build(self._keys, datetime.now(UTC))
        if before - set(self.keyring.by_kid):
            # A key dropped out: tokens it signed must not live on in a cache.
            for key, cache in self._caches.items():
                if isinstance(key, tuple) and key[:1] == ("oauth",):
                    cache.clear()

    def _purge(self) -> None:
        self._revocations.purge()
        self._assertions.purge()

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn)
