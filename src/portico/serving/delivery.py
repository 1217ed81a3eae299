"""``portico serve --role worker``: a process that only delivers webhooks.

Scale-out: any number of them, on any number of machines, against one PostgreSQL (they claim with
``FOR UPDATE SKIP LOCKED``); on SQLite they share the file's single writer. Each reads the same
config file as the gateways (its ``events`` and ``database`` sections), reloads it on SIGHUP,
and stops on SIGINT or SIGTERM after the attempts in flight are recorded. ``--listen`` opens the
operations listener (``/healthz``, ``/readyz``, ``/metrics``) there.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvloop
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.process_collector import ProcessCollector

from portico.assembly import load_config_to_serve
from portico.config.errors import ConfigError
from portico.config.model import Listen, PorticoConfig
from portico.core.errors import PorticoError
from portico.core.net import host_port
from portico.events.service import Events
from portico.gateway.stats import GatewayStats
from portico.operations.listener import Operations, ReadinessCheck
from portico.operations.metrics import capability_families
from portico.serving.listening import listening
from portico.store.database import Database

__all__ = ["NoEventsSection", "serve_worker"]

log = logging.getLogger("portico")


class NoEventsSection(PorticoError):
    """A delivery worker was started on a config without an ``events`` section."""


async def run_worker(config_path: Path, listen: tuple[str, int] | None = None) -> int:
    from portico.serving import prepare_store

    config = load_config_to_serve(config_path)
    if config.events is None:
        raise NoEventsSection(
            f"{config_path} has no events section: a delivery worker has nothing to deliver"
        )
    secrets = prepare_store(config)
    current: list[PorticoConfig] = [config]
    events = Events(Database(config.database.url), secrets, lambda: current[0])
    events.start_delivering()
    operations: Operations | None = None
    if listen is not None:
        metrics = CollectorRegistry(auto_describe=False)
        metrics.register(events.metrics)
        metrics.register(_Counters(events.metrics.stats))
        ProcessCollector(registry=metrics)

        async def store_answers() -> None:
            await asyncio.to_thread(events.queue.depth, 0.0)

        operations = Operations(metrics, [ReadinessCheck("database", store_answers)])
        host, port = listen
        worker_ops = operations
        await listening(
            "--listen", Listen(host=host, port=port), lambda: worker_ops.start(host, port)
        )
        print(f"Portico operations on http://{host_port(host, operations.port)}", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            current[0] = load_config_to_serve(config_path)
            log.info("config reloaded")
        except ConfigError as exc:
            log.error("config reload refused; the previous config keeps delivering:\n%s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    print(f"Portico delivery worker on {config.database.url.split('://')[0]}", flush=True)
    await stopped.wait()
    log.info("shutting down: recording the attempts in flight")
    if operations is not None:
        await operations.stop()
    await events.stop()
    events.database.dispose()
    return 0


class _Counters:
    """The delivery counters (kept in a stats of the worker's own)."""

    def __init__(self, stats: GatewayStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        return capability_families(self._stats)


def serve_worker(config_path: Path, listen: tuple[str, int] | None = None) -> int:
    return uvloop.run(run_worker(config_path, listen))
