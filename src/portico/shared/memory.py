"""Shared state kept in the process: the default with one gateway process.

A dictionary of keys to values and expiry deadlines. Expired keys are dropped when read, and a
sweep on writes bounds the memory of keys nobody reads again (a rate-limit counter per client
address). The event loop runs one callback at a time, so a script's Python body is atomic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from portico.shared.state import Script, SharedState

__all__ = ["MemoryState", "MemoryTable"]

_SWEEP_EVERY = 1024
"""Writes between two sweeps of expired keys: amortised O(1) per write."""


class MemoryTable:
    """The process's keys: the :class:`~portico.shared.state.Table` scripts' Python bodies use."""

    def __init__(self, max_keys: int) -> None:
        self._values: dict[str, tuple[bytes, float | None]] = {}
        self._writes = 0
        self.max_keys = max_keys
        """Beyond this many keys, the oldest written are dropped first (a flood of client
        addresses must not exhaust memory)."""

    def get(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline is not None and deadline <= time.monotonic():
            del self._values[key]
            return None
        return value

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._values.pop(key, None)  # re-inserted last: the dict's order is the write order
        self._values[key] = (value, time.monotonic() + ttl if ttl is not None else None)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0 or len(self._values) > self.max_keys:
            self._sweep()

    def delete(self, key: str) -> bool:
        return self._values.pop(key, None) is not None

    def delete_prefix(self, prefix: str) -> int:
        doomed = [k for k in self._values if k.startswith(prefix)]
        for key in doomed:
            del self._values[key]
        return len(doomed)

    def _sweep(self) -> None:
        now = time.monotonic()
        expired = [k for k, (_, d) in self._values.items() if d is not None and d <= now]
        for key in expired:
            del self._values[key]
        excess = len(self._values) - self.max_keys
        if excess > 0:
            for key in list(self._values)[:excess]:
                del self._values[key]

    def __len__(self) -> int:
        return len(self._values)


class MemoryState(SharedState):
    kind = "memory"
    local = True

    def __init__(self, max_keys: int = 1_000_000) -> None:
        self.table = MemoryTable(max_keys)

    def get_now(self, key: str) -> bytes | None:
        return self.table.get(key)

    def run_now(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        return script.python(self.table, keys, args, time.time())

    async def get(self, key: str) -> bytes | None:
        return self.table.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.table.set(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        if self.table.get(key) is not None:
            return False
        self.table.set(key, value, ttl)
        return True

    async def delete(self, key: str) -> bool:
        return self.table.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return self.table.delete_prefix(prefix)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        return self.run_now(script, keys, args)

    async def ping(self) -> bool:
        return True
