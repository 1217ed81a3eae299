"""What one Redis script call costs the gateway's process: Portico's connection
(``portico.shared.redis.RedisState`` on ``portico.shared.resp``) against redis-py's asyncio client
(with hiredis) used the way Portico used it before, in one run.

The workload is a rate-limited request's: ``EVALSHA`` of a small script on one key, called by
``--concurrency`` requests at once (one turn of the event loop), wave after wave. redis-py's side
sends each wave as one pipeline, as ``RedisState`` did with it. The figure is the process's CPU
time per call (``time.process_time``): what the gateway's one core pays, whatever else the
machine runs. A throwaway ``redis-server`` (Debian's) serves both.

    .venv/bin/python bench/redis_client.py [--calls 20000] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import harness
import redis.asyncio as aioredis
import uvloop
from harness import progress, table

from portico.shared.redis import RedisState
from portico.shared.state import Script

SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, 0}
"""
COUNT = Script("bench", SCRIPT, python=lambda table, keys, args, now: [0, 0])


async def _portico(url: str, calls: int, concurrency: int) -> float:
    state = RedisState(url, timeout=5.0, key_prefix="bench:")
    try:
        await state.run(COUNT, ["warm"], ["60000"])
        return await _measure(
            lambda i: state.run(COUNT, [f"k{i % 100}"], ["60000"]), calls, concurrency
        )
    finally:
        await state.close()


async def _redis_py(url: str, calls: int, concurrency: int) -> float:
    client = aioredis.Redis.from_url(url)
    sha = await client.script_load(SCRIPT)
    batch: list[tuple[str, asyncio.Future[object]]] = []

    async def send(wave: list[tuple[str, asyncio.Future[object]]]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key, _ in wave:
                pipe.evalsha(sha, 1, key, "60000")
            results = await pipe.execute()
        for (_, future), result in zip(wave, results, strict=True):
            future.set_result(result)

    def call(i: int) -> Awaitable[object]:
        # One pipeline per turn of the loop, as RedisState.run batched them.
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        batch.append((f"bench:k{i % 100}", future))
        if len(batch) == 1:
            loop.call_soon(lambda: _flush())
        return future

    tasks: set[asyncio.Task[None]] = set()

    def _flush() -> None:
        wave = batch[:]
        batch.clear()
        task = asyncio.get_running_loop().create_task(send(wave))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        return await _measure(call, calls, concurrency)
    finally:
        await client.aclose()


async def _nothing(url: str, calls: int, concurrency: int) -> float:
    """The harness alone (gather, a coroutine per call): what both figures include."""

    async def call(i: int) -> object:
        return [0, 0]

    return await _measure(call, calls, concurrency)


async def _measure(call: Callable[[int], Awaitable[object]], calls: int, concurrency: int) -> float:
    """CPU seconds per call, for ``calls`` calls in waves of ``concurrency``."""

    async def one(i: int) -> None:
        # A request's coroutine awaiting its call (the policy's).
        await call(i)

    started = time.process_time()
    for first in range(0, calls, concurrency):
        await asyncio.gather(*(one(i) for i in range(first, min(first + concurrency, calls))))
    return (time.process_time() - started) / calls


def _all(values: list[float]) -> str:
    return ", ".join(f"{v * 1e6:.1f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="script calls per measurement")
    parser.add_argument("--concurrency", type=int, default=50, help="calls in flight at once")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians shown")
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="portico-bench-redis-") as directory,
        contextlib.ExitStack() as stack,
    ):
        port = harness.start_redis(stack, Path(directory))
        url = f"redis://{harness.HOST}:{port}/0"
        figures: dict[str, list[float]] = {"portico": [], "redis-py": [], "harness": []}
        clients = (("redis-py", _redis_py), ("portico", _portico), ("harness", _nothing))
        for round_number in range(options.rounds):
            for name, run in clients:
                progress(f"round {round_number + 1}: {name}")
                figures[name].append(uvloop.run(run(url, options.calls, options.concurrency)))
    ours = statistics.median(figures["portico"]) * 1e6
    theirs = statistics.median(figures["redis-py"]) * 1e6
    rows = [
        [name, f"{statistics.median(figures[key]) * 1e6:.1f}", _all(figures[key])]
        for name, key in (
            ("redis-py (reference)", "redis-py"),
            ("portico", "portico"),
            ("no Redis: the harness alone", "harness"),
        )
    ]
    print(table(["client", "CPU per script call (µs)", "all rounds (µs)"], rows))
    alone = statistics.median(figures["harness"]) * 1e6
    net_ours, net_theirs = ours - alone, theirs - alone
    print(
        f"\nportico / redis-py: {ours / theirs:.2f} of the CPU per call; less the harness, "
        f"{net_ours:.1f} µs against {net_theirs:.1f} µs ({net_ours / net_theirs:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
