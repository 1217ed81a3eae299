"""What the data plane counts: plain memory written per request, read by the operations listener.

The gateway's hot path cannot afford a metrics library's per-call work (label lookup by value, a
lock, a loop over buckets in Python: about 2 µs per request with ``prometheus_client``, a tenth
of Portico's whole cost). So each route and service holds its own counters, found once when the
snapshot is built, and a request adds to them with a few list and dict operations in compiled
code. ``portico.operations.metrics`` turns them into Prometheus metric families at scrape time,
with ``prometheus_client`` writing the exposition format.

Counters live in one :class:`GatewayStats` for the life of the process, so a config reload does
not reset them (a route or service keeps its counters as long as it keeps its name).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portico.gateway.completion import Completion

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds, in seconds, of the latency histograms (``le``), from 0.5 ms to a minute."""

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Histogram:
    """Counts of observations at or below each bound (not yet cumulative), their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        """One more than the bounds: the last is ``+Inf``."""
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # A scan from the smallest bound, not bisect: most latencies land in the first buckets,
        # and compiled, the loop costs a tenth of a call to bisect_left with boxed floats.
        bounds = self.bounds
        index = 0
        last = len(bounds)
        while index < last and value > bounds[index]:
            index += 1
        self.counts[index] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        out: list[int] = []
        total = 0
        for count in self.counts:
            total += count
            out.append(total)
        return out


class RouteStats:
    """Requests of one route: counts by method and status class, and two latency histograms."""

    __slots__ = ("duration", "requests", "route", "service", "upstream")

    def __init__(self, route: str, service: str) -> None:
        self.route = route
        self.service = service
        self.requests: dict[str, list[int]] = {}
        """Method -> counts by status class (index status // 100 - 1: 1xx ... 5xx)."""
        self.duration = Histogram()
        """The whole exchange: from the first byte of the request head to the last byte sent."""
        self.upstream = Histogram()
        """From sending the request head upstream to receiving the response head."""

    def record(self, method: str, status: int, seconds: float, upstream_seconds: float) -> None:
        index = status // 100 - 1
        if index < 0 or index > 4:
            return  # not an HTTP status: nothing to count
        counts = self.requests.get(method)
        if counts is None:
            counts = self.requests[method] = [0, 0, 0, 0, 0]
        counts[index] += 1
        self.duration.observe(seconds)
        if upstream_seconds >= 0.0:
            self.upstream.observe(upstream_seconds)


class ServiceStats:
    """Failures talking to one service's targets, and retries."""

    __slots__ = ("errors", "name", "retries")

    def __init__(self, name: str) -> None:
        self.name = name
        self.errors: dict[str, int] = {}
        """Kind (``connect``, ``tls``, ``timeout``, ``closed``, ``invalid``) -> count."""
        self.retries = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class LabelledCounter:
    """A policy's own counter (``portico_rate_limited_requests_total``,
    ``portico_cache_lookups_total``...): label values -> count, obtained when the policy is built
    (:meth:`GatewayStats.counter`) and kept across reloads. The gateway knows none of them: the
    metrics exposition and the supervisor's sum read them all alike."""

    __slots__ = ("description", "labels", "name", "values")

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        self.name = name
        """The Prometheus name without ``_total`` (the exposition adds it)."""
        self.description = description
        self.labels = labels
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, values: tuple[str, ...]) -> None:
        self.values[values] = self.values.get(values, 0) + 1

    def add(self, values: tuple[str, ...], amount: int) -> None:
        self.values[values] = self.values.get(values, 0) + amount


class LabelledGauge:
    """A policy's own gauge (requests in flight, queued...): label values -> current value."""

    __slots__ = ("description", "labels", "name", "values")

    def __init__(self, name: str, description: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.description = description
        self.labels = labels
        self.values: dict[tuple[str, ...], int] = {}

    def add(self, values: tuple[str, ...], delta: int) -> None:
        self.values[values] = self.values.get(values, 0) + delta


class NamedHistogram:
    """A capability's histogram (no labels), obtained by name like a counter."""

    __slots__ = ("description", "histogram", "name")

    def __init__(self, name: str, description: str, bounds: tuple[float, ...]) -> None:
        self.name = name
        self.description = description
        self.histogram = Histogram(bounds)


class GatewayStats:
    """Every counter of the data plane, for the life of the process."""

    __slots__ = (
        "counters",
        "enabled",
        "gauges",
        "histograms",
        "last_reload",
        "reloads",
        "routes",
        "services",
        "unrouted",
    )

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        """``operations.metrics: false`` turns per-request counting off (the hot path skips it)."""
        self.routes: dict[str, RouteStats] = {}
        self.unrouted = RouteStats("", "")
        """Requests Portico answered before any route was chosen (400, 404, 405, 408...)."""
        self.services: dict[str, ServiceStats] = {}
        self.reloads = {"success": 0, "failure": 0}
        self.counters: dict[str, LabelledCounter] = {}
        """The policies' own counters, by name (:meth:`counter`)."""
        self.gauges: dict[str, LabelledGauge] = {}
        self.histograms: dict[str, NamedHistogram] = {}
        """The capabilities' own histograms, by name (:meth:`histogram`)."""
        self.last_reload = time.time()
        """When the config that serves was loaded (a Unix time)."""

    def record(self, completion: Completion) -> None:
        """The completion hook that counts each exchange (installed when metrics are on)."""
        route = completion.route
        stats = route.stats if route is not None else None
        if stats is None:
            stats = self.unrouted
        stats.record(
            completion.method, completion.status, completion.seconds, completion.upstream_seconds
        )

    def route(self, name: str, service: str) -> RouteStats | None:
        """The counters of a route (kept across reloads), or ``None`` when counting is off."""
        if not self.enabled:
            return None
        stats = self.routes.get(name)
        if stats is None or stats.service != service:
            stats = self.routes[name] = RouteStats(name, service)
        return stats

    def service(self, name: str) -> ServiceStats:
        stats = self.services.get(name)
        if stats is None:
            stats = self.services[name] = ServiceStats(name)
        return stats

    def counter(self, name: str, description: str, labels: tuple[str, ...]) -> LabelledCounter:
        """A policy's counter, asked for when the policy is built: made on first use, then the
        same one for every policy that asks for ``name``, after a reload too. Counted even when
        ``operations.metrics`` is off unless the policy checks :attr:`enabled` when built."""
        found = self.counters.get(name)
        if found is None or found.labels != labels:
            found = self.counters[name] = LabelledCounter(name, description, labels)
        return found

    def gauge(self, name: str, description: str, labels: tuple[str, ...]) -> LabelledGauge:
        """A policy's gauge, made on first use and the same one after a reload."""
        found = self.gauges.get(name)
        if found is None or found.labels != labels:
            found = self.gauges[name] = LabelledGauge(name, description, labels)
        return found

    def histogram(self, name: str, description: str, bounds: tuple[float, ...]) -> Histogram:
        """A capability's histogram, made on first use, then the same one (summed over the
        gateway processes of ``--workers`` as the counters are)."""
        found = self.histograms.get(name)
        if found is None or found.histogram.bounds != bounds:
            found = self.histograms[name] = NamedHistogram(name, description, bounds)
        return found.histogram

    def reloaded(self, ok: bool) -> None:
        self.reloads["success" if ok else "failure"] += 1
        if ok:
            self.last_reload = time.time()
