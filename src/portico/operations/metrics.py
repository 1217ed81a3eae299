"""Portico's metrics in the Prometheus text format, gathered when Prometheus scrapes.

Every metric is listed, with its labels, in ``docs/metrics.md``. The data plane counts in plain
memory (:mod:`portico.gateway.stats`); :class:`PorticoCollector` reads those counters and the live
health of every target at scrape time, and ``prometheus_client`` writes the exposition format,
next to its standard process metrics (CPU, memory, open files).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from portico.gateway.app import Gateway
from portico.gateway.health import CircuitState
from portico.gateway.stats import LATENCY_BUCKETS, STATUS_CLASSES, GatewayStats, Histogram

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BOUNDS = [repr(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]


@dataclass(frozen=True, slots=True)
class TargetView:
    """What a gateway process knows of one target at scrape time: each process has its own
    health checks and circuit breakers (``worker`` names the process when there are several)."""

    service: str
    target: str
    available: bool
    circuit: str | None
    """The breaker's state (a :class:`CircuitState` value); ``None`` without a breaker."""
    worker: str | None = None


def target_views(gateway: Gateway, worker: str | None = None) -> list[TargetView]:
    """The targets of the config that serves now, as ``gateway`` sees them."""
    views: list[TargetView] = []
    for name, service in gateway.runtime.services.items():
        for target in service.targets:
            circuit = target.health.breaker
            views.append(
                TargetView(
                    service=name,
                    target=target.url,
                    available=target.health.available(),
                    circuit=None if circuit is None else circuit.state.value,
                    worker=worker,
                )
            )
    return views


class PorticoCollector:
    """A ``prometheus_client`` collector over the gateway's counters and live state."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._stats = gateway.stats

    def collect(self) -> Iterator[Metric]:
        yield from counter_families(self._stats)
        yield from target_families(target_views(self._gateway))
        yield from config_families(self._stats, len(self._gateway.runtime.config.routes))


def counter_families(stats: GatewayStats) -> Iterator[Metric]:
    """The data plane's counters and histograms (summed, with several gateway processes)."""
    yield from _requests(stats)
    yield from _upstream_counters(stats)
    yield from _policies(stats)


def _requests(stats: GatewayStats) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "portico_requests",
        "Requests answered, by route, service, method and status class.",
        labels=["route", "service", "method", "status_class"],
    )
    duration = HistogramMetricFamily(
        "portico_request_duration_seconds",
        "The whole exchange, from the first byte of the request to the last byte sent.",
        labels=["route", "service"],
    )
    upstream = HistogramMetricFamily(
        "portico_upstream_duration_seconds",
        "From sending the request head upstream to receiving the response head.",
        labels=["route", "service"],
    )
    for route in (stats.unrouted, *stats.routes.values()):
        labels = [route.route, route.service]
        for method, counts in route.requests.items():
            for status_class, count in zip(STATUS_CLASSES, counts, strict=True):
                if count:
                    requests.add_metric([*labels, method, status_class], count)
        if any(route.duration.counts):
            duration.add_metric(labels, _buckets(route.duration), route.duration.sum)
        if any(route.upstream.counts):
            upstream.add_metric(labels, _buckets(route.upstream), route.upstream.sum)
    yield requests
    yield duration
    yield upstream


def _upstream_counters(stats: GatewayStats) -> Iterator[Metric]:
    errors = CounterMetricFamily(
        "portico_upstream_errors",
        "Failed attempts to reach a service's targets, by kind: connect, tls (the TLS "
        "handshake failed), timeout, closed (the connection ended before a response), invalid "
        "(not HTTP).",
        labels=["service", "kind"],
    )
    retries = CounterMetricFamily(
        "portico_upstream_retries",
        "Attempts made on another target after a failed one.",
        labels=["service"],
    )
    for counted in stats.services.values():
        for kind, count in counted.errors.items():
            errors.add_metric([counted.name, kind], count)
        retries.add_metric([counted.name], counted.retries)
    yield errors
    yield retries


def target_families(views: Sequence[TargetView]) -> Iterator[Metric]:
    """The live health of every target; labelled ``worker`` when the views name one (each
    gateway process has its own view: a sum would mean nothing)."""
    by_worker = any(view.worker is not None for view in views)
    extra = ["worker"] if by_worker else []
    healthy = GaugeMetricFamily(
        "portico_upstream_target_healthy",
        "1 when the target may receive traffic (health checks and circuit breaker), else 0.",
        labels=["service", "target", *extra],
    )
    breaker = GaugeMetricFamily(
        "portico_circuit_breaker_state",
        "The circuit breaker state of each target: 1 for the current state, 0 for the others.",
        labels=["service", "target", "state", *extra],
    )
    healthy_targets = GaugeMetricFamily(
        "portico_upstream_healthy_targets",
        "Targets of the service that may receive traffic.",
        labels=["service", *extra],
    )
    up: dict[tuple[str, ...], int] = {}
    for view in views:
        worker = [view.worker or ""] if by_worker else []
        key = (view.service, *worker)
        up[key] = up.get(key, 0) + (1 if view.available else 0)
        healthy.add_metric([view.service, view.target, *worker], 1 if view.available else 0)
        if view.circuit is not None:
            for state in CircuitState:
                current = 1 if view.circuit == state.value else 0
                breaker.add_metric([view.service, view.target, state.value, *worker], current)
    for key, count in up.items():
        healthy_targets.add_metric(list(key), count)
    yield healthy
    yield breaker
    yield healthy_targets


def config_families(stats: GatewayStats, routes: int) -> Iterator[Metric]:
    """Reloads, the last one, and the routes of the config that serves now."""
    reloads = CounterMetricFamily(
        "portico_config_reloads",
        "Config reloads (file change or SIGHUP), by result: success or failure.",
        labels=["result"],
    )
    for result, count in stats.reloads.items():
        reloads.add_metric([result], count)
    yield reloads
    yield GaugeMetricFamily(
        "portico_config_last_reload_success_timestamp_seconds",
        "When the config that serves now was loaded (Unix time).",
        value=stats.last_reload,
    )
    yield GaugeMetricFamily(
        "portico_routes",
        "Routes in the config that serves now.",
        value=routes,
    )


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return list(zip(_BOUNDS, (float(c) for c in histogram.cumulative()), strict=True))


def registry(gateway: Gateway) -> CollectorRegistry:
    """The registry the listener serves: Portico's metrics and the process's."""
    out = CollectorRegistry(auto_describe=False)
    out.register(PorticoCollector(gateway))
    ProcessCollector(registry=out)
    return out


def capability_families(stats: GatewayStats) -> Iterator[Metric]:
    """The capabilities' own counters and gauges alone (a delivery worker has no gateway)."""
    return _policies(stats)


def exposition(metrics: CollectorRegistry) -> bytes:
    return generate_latest(metrics)


def _policies(stats: GatewayStats) -> Iterator[Metric]:
    """The policies' and capabilities' own counters, gauges and histograms
    (``GatewayStats.counter``, ``gauge`` and ``histogram``)."""
    for counter in stats.counters.values():
        family = CounterMetricFamily(counter.name, counter.description, labels=list(counter.labels))
        for values, count in counter.values.items():
            family.add_metric(list(values), count)
        yield family
    for gauge in stats.gauges.values():
        current = GaugeMetricFamily(gauge.name, gauge.description, labels=list(gauge.labels))
        for values, value in gauge.values.items():
            current.add_metric(list(values), value)
        yield current
    for named in stats.histograms.values():
        histogram = named.histogram
        observed = HistogramMetricFamily(named.name, named.description)
        bounds = [*(repr(bound) for bound in histogram.bounds), "+Inf"]
        cumulative = [float(count) for count in histogram.cumulative()]
        observed.add_metric([], list(zip(bounds, cumulative, strict=True)), histogram.sum)
        yield observed
