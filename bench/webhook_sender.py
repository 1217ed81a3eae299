"""What one webhook attempt costs the worker's process: Portico's :class:`Sender` (aiohttp behind
the SSRF guard, the Standard Webhooks signature made per attempt) against the same POST through
plain aiohttp, through httpcore's pool and through httpx's ``AsyncClient``, in one run.

A throwaway nginx (one worker, a fixed small JSON answer, keep-alive) is the receiver. Each
client sends ``--sends`` POSTs of a 300-byte JSON body, ``--concurrency`` at a time, over
keep-alive connections; rounds alternate between the clients. The figures are sends per second
of wall time (on a shared two-core machine, nginx on the other core) and the sender process's
CPU time per send (``time.process_time``), the one that does not depend on what else runs.

    .venv/bin/python bench/webhook_sender.py [--sends 20000] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import harness
import httpcore
import httpx
import uvloop
from harness import table

from portico.events.sender import Sender
from portico.events.signing import Signer, generate_secret, webhook_headers
from portico.events.ssrf import Destinations

BODY = (
    b'{"type":"invoice.paid","timestamp":"2026-01-01T00:00:00Z","data":{"id":"inv_2KWPBgLlAfx",'
    b'"customer":"cus_9f81eb52","amount":4200,"currency":"EUR","lines":[{"sku":"A-1","qty":2},'
    b'{"sku":"B-7","qty":1}],"status":"paid","paid_at":"2026-01-01T00:00:00Z","note":"bench"}}'
)

Send = Callable[[int], Awaitable[int]]


async def _drive(send: Send, sends: int, concurrency: int) -> tuple[float, float]:
    """(sends per second, CPU microseconds per send) of ``sends`` calls, ``concurrency`` at once."""
    counter = iter(range(sends))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in counter:
            if await send(i) != 200:
                failures += 1

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{failures} of {sends} sends did not get a 200")
    return sends / wall, cpu / sends * 1e6


async def _portico(url: str, sends: int, concurrency: int) -> tuple[float, float]:
    sender = Sender(
        Destinations(allow_http=True, allow_networks=["127.0.0.0/8"]),
        max_connections=concurrency,
    )
    signers = [Signer.from_secret(generate_secret())]

    async def send(i: int) -> int:
        headers = webhook_headers(f"msg_{i}", int(time.time()), BODY, signers)
        result = await sender.send(url, headers, BODY, 10.0)
        return result.status or 0

    try:
        await send(0)
        return await _drive(send, sends, concurrency)
    finally:
        await sender.close()


async def _aiohttp(url: str, sends: int, concurrency: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    session = aiohttp.ClientSession(connector=connector)

    async def send(i: int) -> int:
        async with session.post(
            url, data=BODY, headers={"content-type": "application/json"}, allow_redirects=False
        ) as response:
            await response.read()
            return response.status

    try:
        await send(0)
        return await _drive(send, sends, concurrency)
    finally:
        await session.close()


async def _httpcore(url: str, sends: int, concurrency: int) -> tuple[float, float]:
    pool = httpcore.AsyncConnectionPool(max_connections=concurrency)

    async def send(i: int) -> int:
        response = await pool.request(
            "POST", url, headers={"content-type": "application/json"}, content=BODY
        )
        return response.status

    try:
        await send(0)
        return await _drive(send, sends, concurrency)
    finally:
        await pool.aclose()


async def _httpx(url: str, sends: int, concurrency: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = httpx.AsyncClient(limits=limits, trust_env=False)

    async def send(i: int) -> int:
        response = await client.post(
            url, content=BODY, headers={"content-type": "application/json"}
        )
        return response.status_code

    try:
        await send(0)
        return await _drive(send, sends, concurrency)
    finally:
        await client.aclose()


CLIENTS: dict[str, Callable[[str, int, int], Awaitable[tuple[float, float]]]] = {
    "Portico Sender (guard + signing)": _portico,
    "aiohttp (unguarded)": _aiohttp,
    "httpcore pool (unguarded)": _httpcore,
    "httpx AsyncClient (reference)": _httpx,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
    with harness.bench_session("portico-bench-webhooks-") as (stack, workdir):
        receiver = harness.start_upstream(stack, workdir)
        for round_ in range(args.rounds):
            for name, client in CLIENTS.items():
                figures = uvloop.run(client(receiver.url, args.sends, args.concurrency))
                results[name].append(figures)
                print(
                    f"round {round_ + 1}: {name}: {figures[0]:,.0f} sends/s, "
                    f"{figures[1]:.0f} µs CPU/send",
                    flush=True,
                )
    rows = []
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        rows.append([name, f"{rate:,.0f}", f"{cpu:.0f}"])
    print()
    print(f"{args.sends} sends of {len(BODY)} bytes, {args.concurrency} at a time, median of")
    print(f"{args.rounds} rounds; receiver: nginx, one worker ({harness.machine_summary()})")
    print()
    print(table(["client", "sends/s", "µs CPU per send"], rows))
    return 0


if __name__ == "__main__":
    harness.run(main)
