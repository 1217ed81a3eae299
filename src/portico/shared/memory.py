"""Shared state kept in the process: the default with one gateway process.

A dictionary of keys to values and expiry deadlines. Expired keys are dropped when read, and a
sweep on writes bounds the memory of keys nobody reads again (a rate-limit counter per client
address). Both the number of keys and the bytes they hold are bounded, the oldest written going
first: a cache of responses under many distinct queries must not exhaust the process's memory.
The event loop runs one callback at a time, so a script's Python body is atomic.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from portico.shared.state import Script, SharedState
from portico.shared.table import MAX_BYTES, MemoryTable

__all__ = ["MAX_BYTES", "MemoryState", "MemoryTable"]


class MemoryState(SharedState):
    kind = "memory"
    local = True

    def __init__(self, max_keys: int = 1_000_000, max_bytes: int = MAX_BYTES) -> None:
        self.table = MemoryTable(max_keys, max_bytes)

    def get_now(self, key: str) -> bytes | None:
        return self.table.get(key)

    def run_now(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        return script.python(self.table, keys, args, time.time())

    async def get(self, key: str) -> bytes | None:
        return self.table.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.table.get(key) for key in keys]

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
