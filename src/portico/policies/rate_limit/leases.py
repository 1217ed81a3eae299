"""Leases: permits a gateway process takes from Redis a few at a time, so that most requests of a
busy key are decided in the process, without a round trip (docs/rate-limits.md, "Several
processes").

A lease belongs to one counter key and one window (the sliding window's index or the calendar
period's number) and holds the permits Redis granted this process and it has not used yet. Every
permit was counted in Redis when it was granted, so the processes together never admit more than
the limit. A lease the process cannot spend before its window ends is lost with it: the limit then
admits a few requests less than it could, never more. Two bounds keep that small:

- Redis grants at most a sixteenth of the room left (:data:`.algorithm.LEASE_SHARE`), so near
  the end of a limit the grants are of one permit and every process counts exactly;
- a lease's size follows the process's own traffic on the key: it doubles when the last one was
  spent in less than :data:`TARGET` seconds and halves when it lasted more than four times that,
  so a process holds about :data:`TARGET` seconds of its requests, whatever the limit.

When a quarter of a lease is left, the next is asked for ahead (one request to Redis, in the
background): the requests that come meanwhile are served from what is left, so a busy key's
requests almost never wait for Redis. Requests that find a lease spent while Redis is being asked
wait for that answer (twice at most) rather than each asking for a permit of its own.

The deadline of a lease is on the process's monotonic clock, taken when the request to Redis was
sent, plus the time Redis said was left in the window: it ends no later than the window, whatever
the skew between the gateway's clock and Redis's.

Compiled with mypyc (``[tool.portico.native]``).
"""

from __future__ import annotations

import asyncio

__all__ = ["MAX_LEASES", "MAX_WANT", "REFILL_FROM", "TARGET", "Lease", "Leases"]

TARGET = 0.05
"""Seconds of a process's traffic on one key that a lease aims to hold."""
MAX_WANT = 1024
"""The most permits asked for at once."""
REFILL_FROM = 8
"""A grant of at least this many permits is followed by the next one asked for ahead, when a
quarter of it is left; smaller ones are asked for when spent."""
MAX_LEASES = 100_000
"""Leases kept at most; beyond, expired ones are dropped, then the oldest (their permits lost)."""


class Lease:
    """The permits of one key and window this process holds."""

    __slots__ = (
        "arrival",
        "deadline",
        "granted_at",
        "left",
        "pending",
        "refill_at",
        "remaining",
        "want",
        "window",
    )

    def __init__(self) -> None:
        self.window = -1
        """The window index or period number the permits belong to (-1: none yet)."""
        self.left = 0
        """Permits granted and not used yet."""
        self.remaining = 0
        """What Redis had left for every process after the last grant."""
        self.deadline = 0.0
        """When the permits expire (``time.monotonic()``): the end of their window."""
        self.granted_at = 0.0
        self.want = 1
        """The size of the next grant to ask for."""
        self.pending = 0
        """Requests to Redis in flight for this key: while one is, others ask for one permit
        each rather than a lease apiece."""
        self.refill_at = -1
        """When this few permits are left, the next lease is asked for ahead (-1: not ahead)."""
        self.arrival: asyncio.Future[None] | None = None
        """Done when no request to Redis is in flight for the key any more: requests that found
        the lease spent meanwhile wait for it rather than each asking Redis."""

    def usable(self, now: float) -> bool:
        return self.left > 0 and now < self.deadline

    def take(self) -> int:
        """Use one permit; what this process believes is left for the key (for ``RateLimit``)."""
        self.left -= 1
        return self.remaining + self.left

    def give_back(self, window: int) -> None:
        """Return a permit reserved for a request that was not admitted, unless its window has
        been replaced meanwhile (a permit of a past window must not count in the next)."""
        if window == self.window:
            self.left += 1

    def ask(self, now: float) -> int:
        """How many permits to ask Redis for now."""
        if self.pending > 0:
            return 1
        if self.window >= 0:
            lasted = now - self.granted_at
            if lasted < TARGET:
                self.want = min(self.want * 2, MAX_WANT)
            elif lasted > 4 * TARGET:
                self.want = max(1, self.want // 2)
        return self.want

    def waiter(self) -> asyncio.Future[None]:
        """What a request that found the lease spent while Redis is being asked waits for."""
        arrival = self.arrival
        if arrival is None:
            arrival = self.arrival = asyncio.get_running_loop().create_future()
        return arrival

    def settle(self) -> None:
        """A request to Redis for this key ended (its grant, if any, kept already): when none is
        left in flight, the requests waiting try the lease again."""
        self.pending -= 1
        arrival = self.arrival
        if self.pending <= 0 and arrival is not None:
            self.arrival = None
            if not arrival.done():
                arrival.set_result(None)

    def low(self) -> bool:
        """Whether to ask for the next lease now, while permits are left: the requests that
        come meanwhile are served from them instead of waiting for Redis."""
        return self.left <= self.refill_at and self.pending == 0

    def grant(
        self, window: int, taken: int, remaining: int, deadline: float, now: float, used: int = 1
    ) -> int:
        """Keep the permits Redis granted, ``used`` of them at once by the request that asked
        (none for a lease asked for ahead); what this process believes is left for the key."""
        if window == self.window and now < self.deadline:
            # A grant for the same window (requests to Redis overlapped): the permits add up.
            self.left += taken - used
            self.deadline = min(self.deadline, deadline)
        else:
            self.window = window
            self.left = taken - used
            self.deadline = deadline
        # The next lease is asked for when a quarter of this one is left, if it is worth it.
        self.refill_at = taken // 4 if taken >= REFILL_FROM else -1
        self.remaining = remaining
        self.granted_at = now
        return self.remaining + self.left


class Leases:
    """This process's leases, by counter key."""

    __slots__ = ("_leases", "max_leases")

    def __init__(self, max_leases: int = MAX_LEASES) -> None:
        self._leases: dict[str, Lease] = {}
        self.max_leases = max_leases

    def get(self, key: str) -> Lease | None:
        return self._leases.get(key)

    def of(self, key: str, now: float) -> Lease:
        """The lease of ``key``, made empty when there is none."""
        lease = self._leases.get(key)
        if lease is None:
            if len(self._leases) >= self.max_leases:
                self._make_room(now)
            lease = Lease()
            self._leases[key] = lease
        return lease

    def _make_room(self, now: float) -> None:
        expired = [k for k, lease in self._leases.items() if lease.deadline <= now]
        for key in expired:
            del self._leases[key]
        excess = len(self._leases) - self.max_leases + 1
        if excess > 0:
            for key in list(self._leases)[:excess]:
                del self._leases[key]

    def __len__(self) -> int:
        return len(self._leases)
