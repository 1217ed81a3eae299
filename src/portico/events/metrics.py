"""The delivery metrics (docs/metrics.md, "Webhooks").

The counters (attempts and deliveries by outcome, endpoints disabled) are kept in the process's
:class:`~portico.gateway.stats.GatewayStats`, so that ``serve --workers`` sums them over its
processes as it sums the gateway's; the publish-to-first-attempt histogram is this process's;
the queue's figures (depth, dead letters, age of the oldest pending delivery) are the store's,
read at most every :data:`DEPTH_SECONDS` so that a scrape costs no query. :class:`DeliveryMetrics`
is the Prometheus collector of the last two.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import (
    GaugeMetricFamily,
    Metric,
)

from portico.events.queue import DeliveryQueue, Outcome, QueueDepth
from portico.gateway.stats import GatewayStats, LabelledCounter

__all__ = ["DEPTH_SECONDS", "DeliveryMetrics"]

DEPTH_SECONDS = 5.0
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DeliveryMetrics:
    def __init__(
        self,
        depth: Callable[[], QueueDepth] | None = None,
        stats: GatewayStats | None = None,
        *,
        first_attempts: bool = True,
    ) -> None:
        """``first_attempts``: whether this process makes attempts (and so has the histogram)."""
        self.first_attempts = first_attempts
        self.stats = stats if stats is not None else GatewayStats()
        self._attempts: LabelledCounter = self.stats.counter(
            "portico_webhook_attempts",
            "Delivery attempts by outcome (succeeded, retrying, dead, disabled) and class "
            "(the status class, or the error: timeout, connection-refused, private-address...).",
            ("outcome", "class"),
        )
        self._deliveries = self.stats.counter(
            "portico_webhook_deliveries",
            "Deliveries finished: succeeded, or dead after their last attempt.",
            ("outcome",),
        )
        self._disabled = self.stats.counter(
            "portico_webhook_endpoints_disabled",
            "Endpoints disabled by delivery (410 Gone, or failing for disable_after).",
            (),
        )
        self.deliveries: Counter[str] = Counter()
        for outcome in ("succeeded", "dead"):
            self._deliveries.add((outcome,), 0)
        self._disabled.add((), 0)
        # In the stats, as the counters: with --workers the supervisor sums each process's.
        self._first = (
            self.stats.histogram(
                "portico_webhook_first_attempt_seconds",
                "Time from publishing to a delivery's first attempt.",
                LATENCY_BOUNDS,
            )
            if first_attempts
            else None
        )
        self._depth_source = depth
        self._depth: QueueDepth | None = None
        self._depth_at = 0.0

    @classmethod
    def of_queue(
        cls, queue: DeliveryQueue, stats: GatewayStats | None = None, *, first_attempts: bool = True
    ) -> DeliveryMetrics:
        return cls(lambda: queue.depth(time.time()), stats, first_attempts=first_attempts)

    def first_attempt(self, seconds: float) -> None:
        """Publish-to-first-attempt latency of one delivery."""
        if self._first is not None:
            self._first.observe(max(seconds, 0.0))

    def attempt(self, outcome: str, error: str | None, status: int | None) -> None:
        kind = error or ("" if status is None else f"{status // 100}xx")
        self._attempts.inc((outcome, kind))

    def recorded(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.result != "retrying":
                finished = "succeeded" if outcome.result == "succeeded" else "dead"
                self.deliveries[finished] += 1
                self._deliveries.inc((finished,))

    def endpoint_disabled(self) -> None:
        self._disabled.inc(())

    def depth(self) -> QueueDepth | None:
        now = time.monotonic()
        if self._depth_source is not None and now - self._depth_at >= DEPTH_SECONDS:
            self._depth_at = now
            try:
                self._depth = self._depth_source()
            except Exception:
                self._depth = None
        return self._depth

    # -- prometheus_client's collector protocol ----------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The store's gauges (the counters and the histogram are the stats')."""
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        depth = self.depth()
        if depth is not None:
            yield GaugeMetricFamily(
                "portico_webhook_queue_depth",
                "Deliveries pending (waiting for an attempt or a retry), in the store.",
                value=depth.pending,
            )
            yield GaugeMetricFamily(
                "portico_webhook_dead_letters",
                "Deliveries dead after their last attempt, until redelivered or pruned.",
                value=depth.dead,
            )
            age = 0.0 if depth.oldest_due is None else max(time.time() - depth.oldest_due, 0.0)
            yield GaugeMetricFamily(
                "portico_webhook_oldest_pending_age_seconds",
                "Age of the oldest pending delivery, from its publishing.",
                value=age,
            )
