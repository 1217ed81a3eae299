"""The events capability in a serving process: the file's endpoints synced into the store at
start and on each reload, and deliveries made from this process unless
``events.delivery.enabled`` is off (separate ``portico serve --role worker`` processes deliver
then)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.exc import IntegrityError

from portico.config.model import PorticoConfig
from portico.events.api import consumer_api
from portico.events.inbound import inbound_webhooks
from portico.events.service import Events
from portico.gateway.stats import GatewayStats
from portico.identity.context import EndpointProvider
from portico.store.database import Database
from portico.store.secrets import Secrets

__all__ = ["ServedEvents"]

log = logging.getLogger("portico.events")

SYNC_TRIES = 3
"""Gateway processes of ``--workers`` sync the same file at once: the one whose insert loses
reads what the winner wrote and tries again."""


class ServedEvents:
    def __init__(self, events: Events) -> None:
        self.events = events
        self._sync_task: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        config: PorticoConfig,
        secrets: Secrets,
        current: Callable[[], PorticoConfig],
        stats: GatewayStats,
    ) -> ServedEvents | None:
        """The events of a config with an ``events`` section; ``None`` without one. The
        delivery counters are kept in the gateway's ``stats``."""
        if config.events is None:
            return None
        return cls(Events(Database(config.database.url), secrets, current, stats=stats))

    def endpoints(self) -> tuple[EndpointProvider, ...]:
        """The built-in endpoints over this process's events: the consumer webhooks API and the
        inbound webhooks (each serves what the snapshot's config enables)."""
        return (consumer_api(self.events), inbound_webhooks(self.events))

    async def start(self, *, deliver: bool = True) -> None:
        await asyncio.to_thread(self._sync)
        if deliver and self.events.delivery().enabled:
            self.events.start_delivering()

    def config_changed(self) -> None:
        """A reload was applied: the file's endpoints again (in a thread)."""
        self._sync_task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._sync))

    def _sync(self) -> None:
        for attempt in range(SYNC_TRIES):
            try:
                self.events.sync_config()
                return
            except IntegrityError:
                if attempt == SYNC_TRIES - 1:
                    raise
            except Exception as exc:
                log.warning("cannot sync events.endpoints into the store: %s", exc)
                return

    async def stop(self) -> None:
        if self._sync_task is not None:
            await asyncio.gather(self._sync_task, return_exceptions=True)
        await self.events.stop()
        self.events.database.dispose()
