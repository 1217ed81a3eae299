"""Portico's metrics in the Prometheus text format, gathered when Prometheus scrapes.

Every metric is listed, with its labels, in ``docs/metrics.md``. The data plane counts in plain
memory (:mod:`portico.gateway.stats`); :class:`PorticoCollector` reads those counters and the live
health of every target at scrape time, and ``prometheus_client`` writes the exposition format,
next to its standard process metrics (CPU, memory, open files).
"""

from __future__ import annotations

from collections.abc import Iterator

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
from portico.gateway.stats import LATENCY_BUCKETS, STATUS_CLASSES, Histogram

CONTENT_TYPE = CONTENT_TYPE_LATEST
_BOUNDS = [repr(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]


class PorticoCollector:
    """A ``prometheus_client`` collector over the gateway's counters and live state."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._stats = gateway.stats

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._upstreams()
        yield from self._auth()
        yield from self._shared_state()
        yield from self._config()

    def _requests(self) -> Iterator[Metric]:
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
        stats = self._stats
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

    def _upstreams(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "portico_upstream_errors",
            "Failed attempts to reach a service's targets, by kind: connect, timeout, closed "
            "(the connection ended before a response), invalid (not HTTP).",
            labels=["service", "kind"],
        )
        retries = CounterMetricFamily(
            "portico_upstream_retries",
            "Attempts made on another target after a failed one.",
            labels=["service"],
        )
        for counted in self._stats.services.values():
            for kind, count in counted.errors.items():
                errors.add_metric([counted.name, kind], count)
            retries.add_metric([counted.name], counted.retries)
        healthy = GaugeMetricFamily(
            "portico_upstream_target_healthy",
            "1 when the target may receive traffic (health checks and circuit breaker), else 0.",
            labels=["service", "target"],
        )
        breaker = GaugeMetricFamily(
            "portico_circuit_breaker_state",
            "The circuit breaker state of each target: 1 for the current state, 0 for the others.",
            labels=["service", "target", "state"],
        )
        healthy_targets = GaugeMetricFamily(
            "portico_upstream_healthy_targets",
            "Targets of the service that may receive traffic.",
            labels=["service"],
        )
        for name, service in self._gateway.runtime.services.items():
            up = 0
            for target in service.targets:
                available = target.health.available()
                up += available
                healthy.add_metric([name, target.url], 1 if available else 0)
                circuit = target.health.breaker
                if circuit is not None:
                    for state in CircuitState:
                        current = 1 if circuit.state is state else 0
                        breaker.add_metric([name, target.url, state.value], current)
            healthy_targets.add_metric([name], up)
        yield errors
        yield retries
        yield healthy
        yield breaker
        yield healthy_targets

    def _auth(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "portico_auth_failures",
            "Requests refused by a route's auth policy, by method and reason: missing (no "
            "credentials), invalid, tenant, ip, scope.",
            labels=["route", "method", "reason"],
        )
        for (route, method, reason), count in self._stats.auth_failures.items():
            failures.add_metric([route, method, reason], count)
        yield failures

    def _shared_state(self) -> Iterator[Metric]:
        stats = self._stats
        lookups = CounterMetricFamily(
            "portico_cache_lookups",
            "Requests a route's cache policy handled, by result: hit (answered from the cache), "
            "miss (forwarded), bypass (forwarded without a lookup: the request forbade it).",
            labels=["route", "result"],
        )
        for (route, result), count in stats.cache_lookups.items():
            lookups.add_metric([route, result], count)
        yield lookups
        stores = CounterMetricFamily(
            "portico_cache_stores",
            "Responses a route's cache policy stored.",
            labels=["route"],
        )
        for route, count in stats.cache_stores.items():
            stores.add_metric([route], count)
        yield stores
        idempotency = CounterMetricFamily(
            "portico_idempotency_requests",
            "Requests with an Idempotency-Key, by outcome: stored, replayed, in_flight (409), "
            "mismatch (422), missing and invalid (400), not_stored (the key was freed).",
            labels=["route", "outcome"],
        )
        for (route, outcome), count in stats.idempotency.items():
            idempotency.add_metric([route, outcome], count)
        yield idempotency
        failures = CounterMetricFamily(
            "portico_shared_state_failures",
            "Operations of a policy on the shared state (Redis) that failed or timed out.",
            labels=["policy", "route"],
        )
        for (policy, route), count in stats.shared_state_failures.items():
            failures.add_metric([policy, route], count)
        yield failures

    def _config(self) -> Iterator[Metric]:
        reloads = CounterMetricFamily(
            "portico_config_reloads",
            "Config reloads (file change or SIGHUP), by result: success or failure.",
            labels=["result"],
        )
        for result, count in self._stats.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        yield GaugeMetricFamily(
            "portico_config_last_reload_success_timestamp_seconds",
            "When the config that serves now was loaded (Unix time).",
            value=self._stats.last_reload,
        )
        yield GaugeMetricFamily(
            "portico_routes",
            "Routes in the config that serves now.",
            value=len(self._gateway.runtime.config.routes),
        )


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return list(zip(_BOUNDS, (float(c) for c in histogram.cumulative()), strict=True))


def registry(gateway: Gateway) -> CollectorRegistry:
    """The registry the listener serves: Portico's metrics and the process's."""
    out = CollectorRegistry(auto_describe=False)
    out.register(PorticoCollector(gateway))
    ProcessCollector(registry=out)
    return out


def exposition(metrics: CollectorRegistry) -> bytes:
    return generate_latest(metrics)
