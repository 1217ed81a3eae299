"""State that every gateway process must see alike: rate-limit counters, cached responses,
idempotency records, signature nonces (docs/shared-state.md).

One interface, :class:`~portico.shared.state.SharedState`, with two backends, as Litestar's
stores: :class:`~portico.shared.memory.MemoryState` in the process (the default with one
process) and :class:`~portico.shared.redis.RedisState` (the config's ``redis`` section: one
Redis server for any number of processes on any number of machines). An operation that must be
atomic across processes is a :class:`~portico.shared.state.Script`: the same algorithm written
twice, in Lua for Redis and in Python for the process, and tested against each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portico.config.model import Redis
    from portico.shared.state import SharedState

__all__ = ["open_shared_state"]


def open_shared_state(redis: Redis | None) -> SharedState:
    """The backend the config asks for: Redis when it has a ``redis`` section, else the
    process's memory. Redis's client connects lazily: nothing is sent until first used."""
    if redis is None:
        from portico.shared.memory import MemoryState

        return MemoryState()
    from portico.shared.redis import RedisState

    return RedisState(
        redis.url,
        timeout=redis.timeout,
        key_prefix=redis.key_prefix,
    )
