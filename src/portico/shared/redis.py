"""Shared state in one Redis server, for any number of gateway processes and machines.

Commands go through :class:`~portico.shared.resp.RedisConnection`: one connection per process,
the commands of one turn of the event loop pipelined in one write, replies parsed by hiredis.
Every command is bounded by the section's ``timeout``: a Redis that is down, unreachable or
stalled raises :class:`~portico.shared.state.SharedStateUnavailable` within it, never hangs a
request. A command whose connection broke before its answer (a Redis restart) is sent once more
on a new connection. Scripts run with ``EVALSHA``, loaded when Redis says it does not have them
(``NOSCRIPT``: the first use, and after a restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from portico.shared.resp import (
    Arg,
    ConnectionLost,
    RedisAddress,
    RedisConnection,
    RedisUnavailable,
    ReplyError,
)
from portico.shared.state import Script, SharedState, SharedStateUnavailable

__all__ = ["RedisState"]


class RedisState(SharedState):
    kind = "redis"
    local = False

    def __init__(self, url: str, *, timeout: float, key_prefix: str = "portico:") -> None:
        self.url = url
        self.timeout = timeout
        self.prefix = key_prefix
        self._connection = RedisConnection(RedisAddress.from_url(url), timeout)
        self._shas: dict[str, bytes] = {}
        """Each script's SHA1, as ``EVALSHA`` names it."""

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _command(self, what: str, *args: Arg) -> Any:
        try:
            try:
                return await self._connection.call(*args)
            except ConnectionLost:
                # After a Redis restart the connection is dead: once more on a fresh one, so a
                # restart costs no request its answer (still within the timeout).
                return await self._connection.call(*args)
        except (RedisUnavailable, ReplyError) as exc:
            raise self._unavailable(what, exc) from exc

    def _unavailable(self, what: str, exc: Exception) -> SharedStateUnavailable:
        if isinstance(exc, ReplyError):
            return SharedStateUnavailable(f"Redis at {_safe(self.url)} refused {what}: {exc}")
        return SharedStateUnavailable(
            f"Redis at {_safe(self.url)} did not answer {what} within "
            f"{self.timeout * 1000:g} ms: {exc}"
        )

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._command("GET", "GET", self._key(key))
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        values: list[bytes | None] = await self._command(
            "MGET", "MGET", *[self.prefix + key for key in keys]
        )
        return values

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        if ttl is None:
            await self._command("SET", "SET", self._key(key), value)
        else:
            await self._command("SET", "SET", self._key(key), value, "PX", _ms(ttl))

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        if ttl is None:
            done = await self._command("SET NX", "SET", self._key(key), value, "NX")
        else:
            done = await self._command("SET NX", "SET", self._key(key), value, "NX", "PX", _ms(ttl))
        return done is not None

    async def delete(self, key: str) -> bool:
        return bool(await self._command("DEL", "DEL", self._key(key)))

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _glob(self._key(prefix))
        deleted = 0
        cursor = b"0"
        while True:
            cursor, keys = await self._command(
                "SCAN", "SCAN", cursor, "MATCH", pattern, "COUNT", 500
            )
            if keys:
                deleted += int(await self._command("UNLINK", "UNLINK", *keys))
            if cursor == b"0":
                return deleted

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        """``EVALSHA``; the requests of one turn of the event loop share one write and one
        round trip (what each cost alone dominated a rate-limited request; docs/benchmarks.md).
        The hot path of a Redis-backed policy: one coroutine, no task, no timer of its own."""
        sha = self._shas.get(script.name)
        if sha is None:
            # The name Redis gives a script (EVALSHA), not a security measure.
            digest = hashlib.sha1(script.lua.encode(), usedforsecurity=False)
            sha = self._shas[script.name] = digest.hexdigest().encode()
        prefix = self.prefix
        command: tuple[Arg, ...] = ("EVALSHA", sha, len(keys), *[prefix + k for k in keys], *args)
        loaded = retried = False
        while True:
            try:
                result = await self._connection.call(*command)
                break
            except ReplyError as exc:
                if loaded or not str(exc).startswith("NOSCRIPT"):
                    raise self._unavailable(script.name, exc) from exc
                # Not loaded yet, or Redis restarted since: load it, and run it again.
                loaded = True
                await self._command("SCRIPT LOAD", "SCRIPT", "LOAD", script.lua)
            except ConnectionLost as exc:
                if retried:
                    raise self._unavailable(script.name, exc) from exc
                retried = True  # a Redis restart: once more, on a new connection
            except RedisUnavailable as exc:
                raise self._unavailable(script.name, exc) from exc
        return [int(v) for v in result]

    async def ping(self) -> bool:
        try:
            return bool(await self._command("PING", "PING"))
        except SharedStateUnavailable:
            return False

    async def close(self) -> None:
        await self._connection.close()


def _ms(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _glob(prefix: str) -> str:
    """A SCAN pattern matching keys that start with ``prefix`` literally."""
    special = "\\*?[]"
    return "".join("\\" + c if c in special else c for c in prefix) + "*"


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
