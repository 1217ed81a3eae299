"""The ``concurrency`` policy at request time: at most ``max`` requests in progress to a service
(or a route) per gateway process, a short bounded queue beyond it, then 503
``concurrency-limit-exceeded`` (docs/rate-limits.md#upstream-concurrency).

    services:
      orders:
        policies: [{type: concurrency, max: 50, queue: 20, queue_timeout: 1s}]

A place is taken in ``on_request`` and given back in ``on_complete``, once the exchange is over
(the response sent, the client gone or the upstream broken off): a streamed download holds its
place as long as it streams. A place given back goes straight to the oldest request waiting, so
the queue is first in, first out, and nothing waiting can be overtaken by a newcomer.

The count is per process, on purpose: a shared count in Redis would cost two round trips per
request and leave, for every process that dies mid-request, places taken until a lease expires.
With N gateway processes a service sees at most N x ``max``: set ``max`` to its capacity / N.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import Awaitable

from portico.gateway import problems
from portico.gateway.completion import Completion
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter, LabelledGauge
from portico.identity.context import BuildContext
from portico.policies.concurrency.settings import ConcurrencySettings
from portico.shared.state import SharedState

__all__ = ["Concurrency", "Limiter", "build"]

STATE_KEY = "concurrency"
"""The exchange's state: the :class:`Limiter` holding a place for it, or its waiting future."""

_LIMITERS: weakref.WeakKeyDictionary[SharedState, dict[str, Limiter]] = weakref.WeakKeyDictionary()
"""The limiters of each gateway process, by scope. They must outlive a snapshot: a reload (or an
identity change) builds new policy objects while requests of the old snapshot still hold their
places. Keyed by the process's long-lived shared state (``Extensions.shared``, which the
composition root holds for the life of the process), so that two gateways in one process (tests)
keep apart."""


class Limiter:
    """Places in progress and the queue of one scope (a service, or a route)."""

    __slots__ = (
        "_gauge",
        "_labels",
        "_rejected",
        "in_flight",
        "max",
        "queue",
        "queue_timeout",
        "waiting",
    )

    def __init__(
        self,
        labels: tuple[str, str],
        gauge: LabelledGauge,
        rejected: LabelledCounter,
    ) -> None:
        self._labels = labels
        self._gauge = gauge
        self._rejected = rejected
        self.in_flight = 0
        self.waiting: deque[asyncio.Future[bool]] = deque()
        self.max = 1
        self.queue = 0
        self.queue_timeout = 1.0

    def configure(self, settings: ConcurrencySettings) -> None:
        self.max = settings.max
        self.queue = settings.queue
        self.queue_timeout = settings.queue_timeout
        # A larger max (a reload) frees places at once for the requests already waiting.
        while self.in_flight < self.max and self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                self.in_flight += 1
                self._gauge.add(self._labels, 1)
                waiter.set_result(True)

    def try_take(self) -> bool:
        if self.in_flight < self.max and not self.waiting:
            self.in_flight += 1
            self._gauge.add(self._labels, 1)
            return True
        return False

    def queued(self) -> int:
        return sum(1 for waiter in self.waiting if not waiter.done())

    def enqueue(self) -> asyncio.Future[bool] | None:
        """A future that resolves when a place is handed over; ``None`` when the queue is full."""
        if self.queued() >= self.queue:
            self._rejected.inc((*self._labels, "queue_full"))
            return None
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        return waiter

    def timed_out(self) -> None:
        self._rejected.inc((*self._labels, "timeout"))

    def give_back(self) -> None:
        # The place goes to the oldest request still waiting (a cancelled or timed-out one has
        # its future done already); only when nobody waits does the count fall.
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_flight -= 1
        self._gauge.add(self._labels, -1)


def _refusal(exchange: Exchange) -> Reply:
    return problems.problem(
        problems.CONCURRENCY_LIMIT_EXCEEDED,
        exchange.request_id,
        headers=Headers([("retry-after", "1")]),
    )


class Concurrency:
    __slots__ = ("_limiter", "needs_body")

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self.needs_body = False

    def on_request(self, exchange: Exchange) -> Reply | Awaitable[Reply | None] | None:
        limiter = self._limiter
        if limiter.try_take():
            exchange.state[STATE_KEY] = limiter
            return None
        waiter = limiter.enqueue()
        if waiter is None:
            return _refusal(exchange)
        exchange.state[STATE_KEY] = waiter
        return self._wait(exchange, waiter)

    async def _wait(self, exchange: Exchange, waiter: asyncio.Future[bool]) -> Reply | None:
        limiter = self._limiter
        try:
            await asyncio.wait_for(asyncio.shield(waiter), limiter.queue_timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                pass  # handed a place just as the time ran out: keep it
            else:
                waiter.cancel()
                exchange.state.pop(STATE_KEY, None)
                limiter.timed_out()
                return _refusal(exchange)
        except asyncio.CancelledError:
            if waiter.cancelled():
                return None  # on_complete cancelled it while it waited: the client left
            # The gateway is stopping: the place must not be handed to nobody.
            if waiter.done():
                limiter.give_back()
            else:
                waiter.cancel()
            raise
        state = exchange.state
        if state.get(STATE_KEY) is not waiter:
            limiter.give_back()  # the exchange ended while the place was on its way
            return None
        state[STATE_KEY] = limiter
        return None

    def on_complete(self, exchange: Exchange, completion: Completion) -> None:
        held = exchange.state.pop(STATE_KEY, None)
        if isinstance(held, Limiter):
            held.give_back()
        elif isinstance(held, asyncio.Future) and not held.done():
            held.cancel()  # still queued: the client left


def _scope(settings_from_route: bool, context: BuildContext) -> tuple[str, str]:
    """``(service, route)`` labels: the route is empty for a service-wide limit."""
    return (context.service_name, context.route_name if settings_from_route else "")


def build(settings: ConcurrencySettings, context: BuildContext) -> Concurrency:
    route = next((r for r in context.config.routes if r.name == context.route_name), None)
    own = route is not None and any(spec.type == "concurrency" for spec in route.policies)
    labels = _scope(own, context)
    scope = f"route:{labels[1]}" if own else f"service:{labels[0]}"
    stats = context.extensions.stats
    gauge = stats.gauge(
        "portico_concurrency_in_flight",
        "Requests holding a place of a concurrency policy, by service and route (empty for a "
        "service-wide limit), in this process.",
        ("service", "route"),
    )
    rejected = stats.counter(
        "portico_concurrency_rejected",
        "Requests refused with 503 by a concurrency policy, by service, route and reason: "
        "queue_full or timeout.",
        ("service", "route", "reason"),
    )
    limiters = _LIMITERS.setdefault(context.extensions.shared, {})
    limiter = limiters.get(scope)
    if limiter is None:
        limiter = limiters[scope] = Limiter(labels, gauge, rejected)
    limiter.configure(settings)
    return Concurrency(limiter)
