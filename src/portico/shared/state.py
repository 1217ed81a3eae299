"""The interface of shared state, and the error of a backend that cannot answer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from portico.core.errors import PorticoError

__all__ = ["Script", "SharedState", "SharedStateUnavailable", "Table"]


class SharedStateUnavailable(PorticoError):
    """The shared state did not answer in time (Redis down, unreachable or too slow). A policy
    follows its configured choice: fail open (let the request through) or closed (503)."""


class Table(Protocol):
    """What a script's Python body reads and writes: the process's keys, their values, and
    their expiry (a ``time.monotonic()`` deadline or ``None``)."""

    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes, ttl: float | None) -> None: ...
    def delete(self, key: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Script:
    """One atomic operation on a few keys, written for both backends.

    ``lua`` runs in Redis with ``KEYS`` and ``ARGV`` (``redis.call('TIME')`` is the clock:
    every process then agrees on it); ``python(table, keys, args, now)`` does the same on the
    process's table, ``now`` being the wall clock in seconds. Both return a list of integers.
    Arguments are strings, as Redis gets them.
    """

    name: str
    lua: str
    python: Callable[[Table, Sequence[str], Sequence[str], float], list[int]]


class SharedState(ABC):
    """Keys with values and an optional time to live, under the backend's key prefix.

    Every method of a remote backend may raise :class:`SharedStateUnavailable`, never hangs
    beyond the backend's timeout. ``local`` backends answer at once, so a policy may use the
    ``*_now`` methods and return a plain value instead of an awaitable (the gateway then does
    not schedule anything).
    """

    kind: str
    """``memory`` or ``redis``: what ``/readyz`` and the logs name."""
    local: bool
    """True when the state is this process's own (the ``*_now`` methods work)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, in one round trip where the backend can (Redis ``MGET``)."""
        return [await self.get(key) for key in keys]

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Set ``key`` only if it is absent; True when it was set (Redis ``SET NX``)."""

    @abstractmethod
    async def delete(self, key: str) -> bool: ...

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; how many were deleted."""

    @abstractmethod
    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        """Run ``script`` atomically on ``keys``."""

    @abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (``/readyz``)."""

    async def close(self) -> None:  # noqa: B027 - a backend without connections has nothing to do
        """Release connections (at shutdown)."""

    def run_now(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        """:meth:`run` without awaiting, for a ``local`` backend only."""
        raise TypeError(f"{self.kind} state is not local: await run()")

    def get_now(self, key: str) -> bytes | None:
        """:meth:`get` without awaiting, for a ``local`` backend only."""
        raise TypeError(f"{self.kind} state is not local: await get()")
