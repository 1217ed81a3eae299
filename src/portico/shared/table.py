"""The table of the process's shared state: keys, values and expiry deadlines, bounded in keys and
bytes (the oldest written going first). Read and written by the rate limit's counting and the
cache on every request of a route with them, so compiled with mypyc, apart from
:class:`~portico.shared.memory.MemoryState` (which implements the interpreted
:class:`~portico.shared.state.SharedState` interface).
"""

from __future__ import annotations

import time

__all__ = ["MAX_BYTES", "MemoryTable"]

_SWEEP_EVERY = 1024
"""Writes between two sweeps of expired keys: amortised O(1) per write."""

MAX_BYTES = 256 * 1024 * 1024
"""The most bytes of keys and values kept in the process (docs/shared-state.md)."""


class MemoryTable:
    """The process's keys: the :class:`~portico.shared.state.Table` scripts' Python bodies use."""

    def __init__(self, max_keys: int, max_bytes: int = MAX_BYTES) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._writes = 0
        self._bytes = 0
        self.max_keys = max_keys
        """Beyond this many keys, the oldest written are dropped first (a flood of client
        addresses must not exhaust memory)."""
        self.max_bytes = max_bytes
        """Beyond this many bytes of keys and values, the oldest written are dropped first."""

    @property
    def size(self) -> int:
        """The bytes of keys and values kept."""
        return self._bytes

    def get(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= time.monotonic():
            self._drop(key)
            return None
        return value

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._drop(key)  # re-inserted last: the dict's order is the write order
        self._values[key] = (value, time.monotonic() + ttl if ttl is not None else None)
        self._bytes += len(key) + len(value)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0 or len(self._values) > self.max_keys:
            self._sweep()
        while self._bytes > self.max_bytes and self._values:
            # The oldest written first, without a scan: at the budget every write gets here.
            self._drop(next(iter(self._values)))

    def delete(self, key: str) -> bool:
        return self._drop(key)

    def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._values if k.startswith(prefix)]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    def _drop(self, key: str) -> bool:
        entry = self._values.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(key) + len(entry[0])
        return True

    def _sweep(self) -> None:
        now = time.monotonic()
        expired = [k for k, (_, d) in self._values.items() if d is not None and d <= now]
        for key in expired:
            self._drop(key)
        excess = len(self._values) - self.max_keys
        if excess > 0:
            for key in list(self._values)[:excess]:
                self._drop(key)

    def __len__(self) -> int:
        return len(self._values)
