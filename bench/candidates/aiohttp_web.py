"""Candidate (d): aiohttp's web server on uvloop, forwarding with aiohttp's client."""

from __future__ import annotations

import asyncio

import aiohttp
import uvloop
import yarl
from _common import HOST, POOL_SIZE, forwardable, settings
from aiohttp import web
from multidict import CIMultiDict

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def forward(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION]
    headers = forwardable(request.raw_headers, drop_host=True)
    try:
        async with session.request(
            request.method,
            yarl.URL(request.app[UPSTREAM] + request.raw_path, encoded=True),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            data=await request.read() or None,
            allow_redirects=False,
        ) as response:
            content = await response.read()
            status, raw_headers = response.status, forwardable(response.raw_headers)
    except (aiohttp.ClientError, TimeoutError):
        return web.Response(status=502, text="bad gateway\n")
    headers_out = CIMultiDict(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_headers
    )
    return web.Response(status=status, body=content, headers=headers_out)


async def main(port: int, upstream: str) -> None:
    app = web.Application()
    app[UPSTREAM] = upstream
    app.router.add_route("*", "/{tail:.*}", forward)
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:
        app[SESSION] = session
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=2048).start()
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    config = settings()
    uvloop.run(main(config.port, config.upstream))
