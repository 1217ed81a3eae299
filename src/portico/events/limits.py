"""An endpoint's rate limit and concurrency, decided in the store for every delivering process.

A claim (:meth:`~portico.events.queue.DeliveryQueue.claim`) that took deliveries of an endpoint
with a limit locks the endpoint's row (``FOR UPDATE`` on PostgreSQL, in the order of their ids;
SQLite's single writer serialises claims already) and admits, in its own transaction, what the
limits allow; the rest is given back, due when a slot or the rate frees one. Two processes, or
two machines, therefore never both admit the last slot: the second waits for the first's lock,
then sees its admissions.

- **Rate limit**: GCRA (the generic cell rate algorithm, a token bucket kept as one number): the
  endpoint row's ``rate_tat`` is the theoretical arrival time of the next delivery. With ``rate``
  deliveries a second (one every ``T = 1 / rate``) and a burst of ``max(1, rate / 10)``, a
  delivery is admitted at ``now`` when ``rate_tat - (burst - 1) * T <= now``, and ``rate_tat``
  moves to ``max(rate_tat, now) + T``. In any window of ``w`` seconds, at most
  ``w * rate + burst`` deliveries are admitted, whichever processes admit them.
- **Concurrency**: the endpoint row's ``held`` lists the deliveries admitted under it; those still
  held (pending, and claimed until later than now) fill the slots. A delivery frees its slot when
  its attempt is recorded, or when its claim expires (the process that held it died).

What a library of rate limiters offers keeps its state in memory or Redis; here the state must
move in the claim's transaction, so it is the few lines below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["BUSY_SECONDS", "Admission", "admit", "burst_of"]

BUSY_SECONDS = 0.05
"""How far a delivery is put back when its endpoint's concurrency is full: a slot frees when an
attempt is recorded, which a delivering process does every 20 ms."""


def burst_of(rate: float) -> float:
    """Deliveries an endpoint limited to ``rate`` a second may receive at once."""
    return max(1.0, rate / 10)


@dataclass(slots=True)
class Admission:
    """What one claim does with an endpoint's deliveries."""

    admitted: list[int] = field(default_factory=list)
    deferred: list[tuple[int, float]] = field(default_factory=list)
    """Deliveries given back, and when each is due again."""
    rate_tat: float | None = None
    """The rate limit's new state (``None``: no rate limit)."""
    held: list[int] | None = None
    """The deliveries held under the concurrency after this claim (``None``: no concurrency)."""


def admit(
    candidates: Sequence[int],
    now: float,
    *,
    rate_limit: float | None,
    concurrency: int | None,
    rate_tat: float | None,
    still_held: Sequence[int] = (),
) -> Admission:
    """Admit ``candidates`` (delivery ids, in the order they should go) at ``now``: as many as the
    endpoint's free slots and its rate allow, given its state (``rate_tat``, and ``still_held``:
    the deliveries of earlier claims that still hold a slot)."""
    admission = Admission()
    held = list(still_held)
    interval = 1.0 / rate_limit if rate_limit else 0.0
    tolerance = (burst_of(rate_limit) - 1) * interval if rate_limit else 0.0
    tat = now if rate_tat is None else max(rate_tat, now)
    waiting: list[int] = []
    for delivery_id in candidates:
        if waiting or (concurrency is not None and len(held) >= concurrency):
            waiting.append(delivery_id)
            continue
        if rate_limit:
            if tat - tolerance > now:
                waiting.append(delivery_id)
                continue
            tat = max(tat, now) + interval
        admission.admitted.append(delivery_id)
        held.append(delivery_id)
    if waiting:
        busy = concurrency is not None and len(held) >= concurrency
        free_at = tat - tolerance if rate_limit else now
        for place, delivery_id in enumerate(waiting):
            # Spread over the rate's slots, and a concurrency's worth every BUSY_SECONDS, so that
            # a backlog is not claimed and given back whole each time a slot may have freed.
            due = max(free_at, now) + place * interval
            if busy and concurrency is not None:
                due = max(due, now + BUSY_SECONDS * (1 + place // max(concurrency, 1)))
            admission.deferred.append((delivery_id, due))
    admission.rate_tat = tat if rate_limit else None
    admission.held = held if concurrency is not None else None
    return admission
