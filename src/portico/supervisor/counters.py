"""A gateway process's counters as plain data, and their sum over every process.

Each gateway process counts in its own memory (:mod:`portico.gateway.stats`). When the
supervisor is scraped, it asks every process for its :func:`tally` and adds them up with
:func:`add` into one :class:`~portico.gateway.stats.GatewayStats`, which the single-process
metrics code turns into Prometheus families: counters, histogram buckets, sums and counts are
summed (a sum of cumulative buckets is the cumulative bucket of the sum). What a process had
counted when it died is kept (its last tally) and added in, so a counter never goes backwards
because a process was replaced.
"""

from __future__ import annotations

from typing import Any

from portico.gateway.stats import (
    GatewayStats,
    Histogram,
    LabelledCounter,
    LabelledGauge,
    RouteStats,
)
from portico.operations.metrics import TargetView

__all__ = ["Tally", "add", "summed", "tally", "targets_of"]

Tally = dict[str, Any]
"""JSON-ready: ``routes``, ``services``, ``targets``, and the policies' and capabilities'
counters, gauges and histograms (``counters``, ``gauges``, ``histograms``)."""


def tally(stats: GatewayStats, targets: list[TargetView]) -> Tally:
    """What ``stats`` counted so far, and how this process sees each target now."""
    return {
        "routes": [
            [
                route.route,
                route.service,
                route.requests,
                [route.duration.counts, route.duration.sum],
                [route.upstream.counts, route.upstream.sum],
            ]
            for route in (stats.unrouted, *stats.routes.values())
        ],
        "services": [[s.name, s.errors, s.retries] for s in stats.services.values()],
        "targets": [[t.service, t.target, t.available, t.circuit] for t in targets],
        "counters": [
            [c.name, c.description, list(c.labels), [[list(k), v] for k, v in c.values.items()]]
            for c in stats.counters.values()
        ],
        "gauges": [
            [g.name, g.description, list(g.labels), [[list(k), v] for k, v in g.values.items()]]
            for g in stats.gauges.values()
        ],
        "histograms": [
            [h.name, h.description, list(h.histogram.bounds), h.histogram.counts, h.histogram.sum]
            for h in stats.histograms.values()
        ],
    }


def add(total: GatewayStats, counted: Tally) -> None:
    """Add the counters of ``counted`` into ``total`` (the targets' views are not counters)."""
    for name, service, requests, duration, upstream in counted["routes"]:
        if not name and not service:
            route = total.unrouted
        else:
            # Keyed by route and service: two processes may serve a route under two services
            # for the moment one has reloaded and the other not yet.
            key = f"{name}\x00{service}"
            found = total.routes.get(key)
            route = found if found is not None else RouteStats(name, service)
            total.routes[key] = route
        for method, counts in requests.items():
            mine = route.requests.setdefault(method, [0, 0, 0, 0, 0])
            for index, count in enumerate(counts):
                mine[index] += count
        _add_histogram(route.duration, duration)
        _add_histogram(route.upstream, upstream)
    for name, errors, retries in counted["services"]:
        service_stats = total.service(name)
        for kind, count in errors.items():
            service_stats.errors[kind] = service_stats.errors.get(kind, 0) + count
        service_stats.retries += retries
    # A policy's counters are summed; its gauges too (requests in flight in each process add
    # up to the requests in flight on the machine).
    for name, description, labels, values in counted.get("counters", []):
        counter: LabelledCounter = total.counter(name, description, tuple(labels))
        for key, count in values:
            counter.values[tuple(key)] = counter.values.get(tuple(key), 0) + count
    for name, description, labels, values in counted.get("gauges", []):
        gauge: LabelledGauge = total.gauge(name, description, tuple(labels))
        for key, value in values:
            gauge.values[tuple(key)] = gauge.values.get(tuple(key), 0) + value
    for name, description, bounds, counts, total_sum in counted.get("histograms", []):
        _add_histogram(total.histogram(name, description, tuple(bounds)), [counts, total_sum])


def summed(
    departed: GatewayStats, tallies: list[tuple[int, Tally]]
) -> tuple[GatewayStats, list[TargetView]]:
    """The counters of the processes gone and of each process's last ``(slot, tally)``, summed;
    and what each process sees of the targets, labelled by its slot."""
    total = GatewayStats()
    # What the processes gone had counted, without their gauges: a dead process has nothing
    # in flight any more.
    add(total, {**tally(departed, []), "gauges": []})
    views: list[TargetView] = []
    for slot, counted in tallies:
        add(total, counted)
        views.extend(targets_of(counted, str(slot)))
    return total, views


def targets_of(counted: Tally, worker: str) -> list[TargetView]:
    return [
        TargetView(
            service=service, target=target, available=available, circuit=circuit, worker=worker
        )
        for service, target, available, circuit in counted["targets"]
    ]


def _add_histogram(histogram: Histogram, counted: list[Any]) -> None:
    counts, total = counted
    for index, count in enumerate(counts):
        histogram.counts[index] += count
    histogram.sum += total
