"""Shared state in one Redis server, for any number of gateway processes and machines.

redis-py's asyncio client with hiredis, one connection pool per process. Every command is bounded
by the section's ``timeout``: a Redis that is down, unreachable or stalled raises
:class:`~portico.shared.state.SharedStateUnavailable` within it, never hangs a request. Scripts
run with ``EVALSHA`` (loaded once, reloaded after a Redis restart: redis-py's ``Script`` does
it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError

from portico.shared.state import Script, SharedState, SharedStateUnavailable

__all__ = ["RedisState"]


class RedisState(SharedState):
    kind = "redis"
    local = False

    def __init__(
        self, url: str, *, timeout: float, key_prefix: str = "portico:", max_connections: int = 64
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.prefix = key_prefix
        # A bounded pool that makes a request wait for a free connection (up to the timeout)
        # rather than fail: a burst of requests must not open a connection each.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            # After a Redis restart every pooled connection is dead: one immediate retry on a
            # fresh connection, so a restart costs no request its answer (still within timeout).
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
            health_check_interval=30,
        )
        self._client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._shas: dict[str, str] = {}
        """Each script's SHA1, once loaded into Redis (SCRIPT LOAD)."""
        self._batch: list[tuple[Script, list[str], list[str], Any]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def _call(self, what: str, awaitable: Any) -> Any:
        try:
            # asyncio.timeout rather than wait_for: no task made per command.
            async with asyncio.timeout(self.timeout):
                return await awaitable
        except (RedisError, OSError, TimeoutError) as exc:
            raise SharedStateUnavailable(
                f"Redis at {_safe(self.url)} did not answer {what} within "
                f"{self.timeout * 1000:g} ms: {type(exc).__name__}: {exc}"
            ) from exc

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self._call("GET", self._client.get(self._key(key)))
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        px = max(1, int(ttl * 1000)) if ttl is not None else None
        await self._call("SET", self._client.set(self._key(key), value, px=px))

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        px = max(1, int(ttl * 1000)) if ttl is not None else None
        done = await self._call("SET NX", self._client.set(self._key(key), value, px=px, nx=True))
        return bool(done)

    async def delete(self, key: str) -> bool:
        return bool(await self._call("DEL", self._client.delete(self._key(key))))

    async def delete_prefix(self, prefix: str) -> int:
        async def scan_and_delete() -> int:
            deleted = 0
            batch: list[Any] = []
            async for key in self._client.scan_iter(match=_glob(self._key(prefix)), count=500):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(await self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(await self._client.unlink(*batch))
            return deleted

        try:
            return await scan_and_delete()
        except (RedisError, OSError) as exc:
            raise SharedStateUnavailable(f"Redis at {_safe(self.url)}: {exc}") from exc

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> list[int]:
        """Scripts run by requests of one turn of the event loop go to Redis together, as one
        pipeline on one connection: one round trip and one connection checkout for all of them
        (what each costs alone dominated a rate-limited request; docs/benchmarks.md)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((script, [self._key(k) for k in keys], list(args), future))
        if len(self._batch) == 1:
            asyncio.get_running_loop().call_soon(self._send_batch)
        result = await self._call(script.name, future)
        return [int(v) for v in result]

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._pipeline(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _pipeline(self, batch: list[tuple[Script, list[str], list[str], Any]]) -> None:
        try:
            for script, *_ in batch:
                if script.name not in self._shas:
                    self._shas[script.name] = await self._client.script_load(script.lua)
            # EVALSHA by hand rather than redis-py's pipeline scripts, which ask SCRIPT EXISTS
            # before every batch: a second round trip each time.
            async with self._client.pipeline(transaction=False) as pipe:
                for script, keys, args, _ in batch:
                    pipe.evalsha(self._shas[script.name], len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
            for index, result in enumerate(results):
                if isinstance(result, NoScriptError):  # Redis restarted: load it again
                    script, keys, args, _ = batch[index]
                    self._shas[script.name] = await self._client.script_load(script.lua)
                    results[index] = await self._client.evalsha(
                        self._shas[script.name], len(keys), *keys, *args
                    )
        except Exception as exc:  # every waiter gets the failure, as its own command would
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def ping(self) -> bool:
        try:
            return bool(await self._call("PING", self._client.ping()))
        except SharedStateUnavailable:
            return False

    async def close(self) -> None:
        await self._client.aclose()


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
