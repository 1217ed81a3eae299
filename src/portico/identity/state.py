"""The live identity state of a gateway process: who the consumers are and which keys work.

:class:`IdentityState` holds one immutable :class:`Directory` built from the config (tenants,
consumers, their scopes, metadata and IP rules, keys declared by hash) and from the database
(keys made with ``portico keys``). The ``auth`` policy reads :attr:`IdentityState.directory` on
every request: a dictionary lookup, never a database query.

The directory is replaced, never changed:

- :meth:`IdentityState.watch` polls the ``identity_changes`` counter (one single-row query) every
  quarter of a second, in a thread, and when it moved reloads the usable keys and swaps in a new
  directory on the event loop. A key revoked anywhere stops working in every process within
  about a second, even when the database is briefly unreachable before that.
- :meth:`IdentityState.use_config` rebuilds it when the config file is reloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING

from portico.config.model import PorticoConfig
from portico.gateway.iprules import CompiledIPRules

# The store (SQLAlchemy) is imported where the database is read: `portico check` imports this
# module with the auth policy and never opens a database.
if TYPE_CHECKING:
    from portico.identity.store import StoredApiKey
    from portico.store.database import Database

__all__ = ["ConsumerEntry", "Directory", "IdentityState", "KeyEntry"]

log = logging.getLogger("portico.identity")

POLL_INTERVAL = 0.25
"""Seconds between two reads of the change counter: revocations apply within about a second."""


@dataclass(frozen=True, slots=True)
class ConsumerEntry:
    id: str
    """``tenant/consumer``: unique across tenants, the ``X-Portico-Consumer`` sent upstream."""
    tenant: str
    name: str
    scopes: frozenset[str]
    metadata: Mapping[str, str]
    ip_rules: CompiledIPRules | None


@dataclass(frozen=True, slots=True)
class KeyEntry:
    id: str
    consumer: str
    """The ``ConsumerEntry.id`` the key belongs to."""
    sha256: str
    not_after: float | None
    """Epoch seconds from which the key no longer works (expiry, rotation, revocation)."""
    source: str
    """``config`` or ``database``."""


@dataclass(frozen=True, slots=True)
class Directory:
    """Consumers and API keys at one moment; replaced as a whole, never changed."""

    consumers: Mapping[str, ConsumerEntry]
    api_keys: Mapping[str, KeyEntry]
    version: int
    """The ``identity_changes`` version the database part was read at (-1: never read)."""
    ip_rules: Mapping[str, CompiledIPRules]
    """The rules of the consumers that have some: usually none, and then nothing to look up."""

    @classmethod
    def build(
        cls, config: PorticoConfig, stored: Iterable[StoredApiKey] = (), version: int = -1
    ) -> Directory:
        consumers: dict[str, ConsumerEntry] = {}
        keys: dict[str, KeyEntry] = {}
        for tenant_name, tenant in config.tenants.items():
            for name, consumer in tenant.consumers.items():
                consumer_id = f"{tenant_name}/{name}"
                consumers[consumer_id] = ConsumerEntry(
                    id=consumer_id,
                    tenant=tenant_name,
                    name=name,
                    scopes=frozenset(consumer.scopes),
                    metadata=MappingProxyType(dict(consumer.metadata)),
                    ip_rules=CompiledIPRules.compile(consumer.ip_rules),
                )
                for ref in consumer.api_keys:
                    keys[ref.id] = KeyEntry(
                        id=ref.id,
                        consumer=consumer_id,
                        sha256=ref.sha256,
                        not_after=ref.expires_at.timestamp() if ref.expires_at else None,
                        source="config",
                    )
        for key in stored:
            if key.id in keys:
                log.warning("API key %s is declared in the config and in the database", key.id)
                continue
            end = key.valid_until
            keys[key.id] = KeyEntry(
                id=key.id,
                consumer=key.consumer,
                sha256=key.sha256,
                not_after=end.timestamp() if end is not None else None,
                source="database",
            )
        ip_rules = {c.id: c.ip_rules for c in consumers.values() if c.ip_rules is not None}
        # Plain dicts, read on every request; nothing holds a reference that could change them.
        return cls(consumers, keys, version, ip_rules)


class IdentityState:
    """Consumers and API keys of one process, kept current from the config and the store.

    Everything that replaces the directory runs on one thread (the event loop once serving
    starts); database reads run in a dedicated thread and hand their rows back.
    """

    def __init__(self, config: PorticoConfig, database: Database | None = None) -> None:
        self._config = config
        self._database = database
        self._stored: tuple[StoredApiKey, ...] = ()
        self._listeners: list[Callable[[Directory], None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._failing = False
        self.directory = Directory.build(config)

    @classmethod
    def for_config(cls, config: PorticoConfig) -> IdentityState:
        """A state without a database: consumers and keys of the config only."""
        return cls(config)

    @classmethod
    def open(cls, config: PorticoConfig) -> IdentityState:
        """A state on ``database.url`` of ``config``, loaded once (blocking, before serving)."""
        from portico.store.database import Database

        state = cls(config, Database(config.database.url))
        state.refresh()
        return state

    @property
    def version(self) -> int:
        return self.directory.version

    def on_change(self, listener: Callable[[Directory], None]) -> None:
        """Call ``listener`` with each new directory (on the thread that replaced it)."""
        self._listeners.append(listener)

    def use_config(self, config: PorticoConfig) -> None:
        """Rebuild the directory for a reloaded config (no database access)."""
        self._config = config
        self._replace(Directory.build(config, self._stored, self.directory.version))

    def refresh(self) -> bool:
        """Reload from the database if ``identity_changes`` moved; whether it did. Blocking:
        for callers outside the event loop (start-up, tests, tools)."""
        loaded = self._load(self.directory.version)
        if loaded is None:
            return False
        self._apply(*loaded)
        return True

    async def watch(self, interval: float = POLL_INTERVAL) -> None:
        """Poll for changes until cancelled. Errors are logged and the old directory kept."""
        if self._database is None:
            return
        loop = asyncio.get_running_loop()
        self._executor = self._executor or ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="portico-identity"
        )
        while True:
            started = loop.time()
            try:
                loaded = await loop.run_in_executor(
                    self._executor, self._load, self.directory.version
                )
            except Exception as exc:
                if not self._failing:
                    log.error("identity refresh failed, serving the last known keys: %s", exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("identity refresh works again")
                self._failing = False
                if loaded is not None:
                    self._apply(*loaded)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._database is not None:
            self._database.dispose()

    def _load(self, known: int) -> tuple[int, tuple[StoredApiKey, ...]] | None:
        database = self._database
        if database is None:
            return None
        from portico.identity.store import ApiKeys, IdentityChanges

        # The version is read before the keys: a write committed in between is loaded now and
        # again at the next poll, never missed.
        version = IdentityChanges(database).version()
        if version == known:
            return None
        return version, tuple(ApiKeys(database).usable(datetime.now(UTC)))

    def _apply(self, version: int, stored: tuple[StoredApiKey, ...]) -> None:
        self._stored = stored
        self._replace(Directory.build(self._config, stored, version))
        log.debug("identity data at version %d: %d database keys", version, len(stored))

    def _replace(self, directory: Directory) -> None:
        self.directory = directory
        for listener in self._listeners:
            listener(directory)
