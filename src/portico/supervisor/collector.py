"""``/metrics`` of ``serve --workers``: every gateway process's metrics as one gateway's.

- Counters and histograms (requests, latencies, upstream errors and retries, auth failures) are
  summed over the processes, those that exited included
  (:func:`~portico.supervisor.counters.summed`), under the same names and labels as with one
  process.
- What each process sees for itself (a target's health, its circuit breaker) is a gauge per
  process, labelled ``worker`` (the slot, 1 to N): a sum of two breakers' states means nothing.
- The config's reloads, last reload and routes are the supervisor's: one per reload of the set.
- ``portico_workers``, ``portico_workers_serving`` and ``portico_worker_restarts`` describe the
  set; the standard ``process_*`` metrics come for each process, labelled ``worker``
  (``supervisor`` for the supervisor itself).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from portico.config.model import PorticoConfig
from portico.events.metrics import DeliveryMetrics
from portico.events.queue import DeliveryQueue
from portico.gateway.stats import GatewayStats
from portico.operations.metrics import (
    TargetView,
    config_families,
    counter_families,
    target_families,
)
from portico.store.database import Database

__all__ = ["SupervisorCollector", "registry"]


class Slot(Protocol):
    """What the collector reads of one gateway process (``supervise.Worker``)."""

    @property
    def slot(self) -> int: ...
    @property
    def serving(self) -> bool: ...
    @property
    def pid(self) -> int | None: ...


class Supervised(Protocol):
    """What the collector reads of the supervisor (``supervise.Supervisor``)."""

    @property
    def workers(self) -> Sequence[Slot]: ...
    @property
    def counted(self) -> tuple[GatewayStats, list[TargetView]]: ...
    @property
    def stats(self) -> GatewayStats: ...
    @property
    def config(self) -> PorticoConfig: ...
    @property
    def restarts(self) -> int: ...


class SupervisorCollector:
    def __init__(self, supervisor: Supervised) -> None:
        self._supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        supervisor = self._supervisor
        # Summed on the event loop before the scrape (Supervisor.refresh): this runs in a
        # thread, and must not read counters the loop may be adding to.
        total, views = supervisor.counted
        yield from counter_families(total)
        yield from target_families(views)
        yield from config_families(supervisor.stats, len(supervisor.config.routes))
        yield from self._workers()
        yield from self._processes()

    def _workers(self) -> Iterator[Metric]:
        supervisor = self._supervisor
        yield GaugeMetricFamily(
            "portico_workers",
            "Gateway processes the supervisor keeps running (serve --workers).",
            value=len(supervisor.workers),
        )
        yield GaugeMetricFamily(
            "portico_workers_serving",
            "Gateway processes serving now (fewer while one is being replaced).",
            value=sum(1 for w in supervisor.workers if w.serving),
        )
        yield CounterMetricFamily(
            "portico_worker_restarts",
            "Gateway processes started to replace one that exited.",
            value=supervisor.restarts,
        )

    def _processes(self) -> Iterator[Metric]:
        """prometheus_client's process metrics of each process, with a ``worker`` label."""
        sources: list[tuple[str, int | str]] = [("supervisor", "self")]
        for worker in self._supervisor.workers:
            pid = worker.pid
            if worker.serving and pid is not None:
                sources.append((str(worker.slot), pid))
        merged: dict[str, Metric] = {}
        for label, source in sources:
            collector = ProcessCollector(pid=partial(_same, source), registry=None)
            for family in collector.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "worker": label}, sample.value)
        yield from merged.values()


def _same(pid: int | str) -> int | str:
    return pid


def registry(supervisor: Supervised, config: PorticoConfig | None = None) -> CollectorRegistry:
    out = CollectorRegistry(auto_describe=False)
    out.register(SupervisorCollector(supervisor))
    if config is not None and config.events is not None:
        # The webhook queue's figures are the store's: read here once, not summed over the
        # gateway processes (whose delivery counters are summed with the gateway's).
        queue = DeliveryQueue(Database(config.database.url), "supervisor")
        out.register(DeliveryMetrics.of_queue(queue, first_attempts=False))
    return out
