"""Candidate (b): uvicorn (uvloop, httptools) serving an ASGI app that forwards with aiohttp."""

from __future__ import annotations

import aiohttp
import yarl
from _common import POOL_SIZE, AsgiProxy, RawHeaders, serve_uvicorn, settings, upstream_from_env


class AiohttpProxy(AsgiProxy):
    session: aiohttp.ClientSession

    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=60)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def shutdown(self) -> None:
        await self.session.close()

    async def forward(
        self, method: str, target: bytes, headers: RawHeaders, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        async with self.session.request(
            method,
            # encoded=True: the path goes upstream byte for byte, not re-quoted by yarl.
            yarl.URL(self.upstream + target.decode("latin-1"), encoded=True),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            data=body or None,
            allow_redirects=False,
        ) as response:
            content = await response.read()
            return response.status, list(response.raw_headers), content


# granian imports this module by name in its worker process, so the app exists at import.
app = AiohttpProxy(upstream_from_env())

if __name__ == "__main__":
    config = settings()
    serve_uvicorn(AiohttpProxy(config.upstream), config.port)
