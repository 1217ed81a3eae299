"""The events capability of one process: publishing, endpoints, and (when this process delivers)
the dispatcher and the pruning of old deliveries.

``portico serve`` builds one when the config has an ``events`` section; ``portico serve --role
worker`` builds one that only delivers. Every part reads the config through ``config()``, so a
reload changes the catalog, the schedule and the limits without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from portico.config.events import DeliverySettings, EventsSettings
from portico.config.model import PorticoConfig
from portico.events.catalog import EventCatalog
from portico.events.dispatcher import Dispatcher
from portico.events.endpoints import Endpoints
from portico.events.log import DeliveryLog
from portico.events.metrics import DeliveryMetrics
from portico.events.publishing import Publisher
from portico.events.queue import DeliveryQueue
from portico.events.sender import Sender
from portico.events.ssrf import Destinations, Resolver
from portico.events.wakeup import WakeListener
from portico.gateway.stats import GatewayStats
from portico.store.database import Database
from portico.store.secrets import Secrets

__all__ = ["PRUNE_SECONDS", "Events"]

log = logging.getLogger("portico.events")

PRUNE_SECONDS = 3600.0
"""How often a delivering process deletes what is older than ``events.delivery.retention``."""


def worker_name() -> str:
    """What this process's claims are marked with: host and pid, for the operator reading rows."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Events:
    def __init__(
        self,
        database: Database,
        secrets: Secrets,
        config: Callable[[], PorticoConfig],
        *,
        resolver: Resolver | None = None,
        stats: GatewayStats | None = None,
    ) -> None:
        """``stats``: where the delivery counters are kept (the gateway process's, so that
        ``serve --workers`` sums them); a stats of their own without one."""
        self.database = database
        self.config = config
        self.endpoints = Endpoints(database, secrets)
        self.queue = DeliveryQueue(database, worker_name(), self._published)
        self.delivery_log = DeliveryLog(database)
        self.metrics = DeliveryMetrics.of_queue(self.queue, stats)
        self._catalog: tuple[EventsSettings | None, EventCatalog] | None = None
        self.dispatcher: Dispatcher | None = None
        self.publisher = Publisher(database, self.catalog, self._published, self._first_delay)
        self.resolver = resolver
        self._pruner: asyncio.Task[None] | None = None
        self._listener: WakeListener | None = None

    @property
    def settings(self) -> EventsSettings:
        return self.config().events or EventsSettings()

    def delivery(self) -> DeliverySettings:
        return self.settings.delivery

    def destinations(self) -> Destinations:
        """The SSRF rules of the current config."""
        delivery = self.delivery()
        return Destinations(allow_http=delivery.allow_http, allow_networks=delivery.allow_networks)

    def catalog(self) -> EventCatalog:
        settings = self.config().events
        cached = self._catalog
        if cached is None or cached[0] is not settings:
            cached = self._catalog = (settings, EventCatalog(settings))
        return cached[1]

    def _first_delay(self) -> float:
        return self.delivery().schedule[0]

    def _published(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    def sync_config(self) -> None:
        """The file's ``events.endpoints`` into the store (``ep_cfg_<name>``)."""
        self.endpoints.sync_config(self.settings.endpoints)

    # -- delivering ------------------------------------------------------------------------------

    def start_delivering(self) -> None:
        delivery = self.delivery()
        sender = Sender(
            self.destinations(),
            self.resolver,
            max_connections=delivery.max_in_flight,
            response_body_limit=delivery.response_body_limit,
        )
        self.dispatcher = Dispatcher(
            self.queue, self.endpoints, self.delivery, sender, self.publisher, self.metrics
        )
        self.dispatcher.start()
        if self.database.backend == "postgresql":
            self._listener = WakeListener(self.database, self.dispatcher.wake)
            self._listener.start()
        self._pruner = asyncio.get_running_loop().create_task(self._prune(), name="portico-prune")

    async def _prune(self) -> None:
        while True:
            try:
                cutoff = time.time() - self.delivery().retention
                pruned = await asyncio.to_thread(self.queue.prune, cutoff)
                if pruned:
                    log.info("pruned %d finished deliveries older than the retention", pruned)
            except Exception as exc:
                log.warning("cannot prune old deliveries: %s", exc)
            await asyncio.sleep(PRUNE_SECONDS)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        if self.dispatcher is not None:
            await self.dispatcher.stop()
