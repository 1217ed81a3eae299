"""Candidate (a): uvicorn (uvloop, httptools) serving an ASGI app that forwards with httpx."""

from __future__ import annotations

import httpx
from _common import POOL_SIZE, AsgiProxy, RawHeaders, serve_uvicorn, settings


class HttpxProxy(AsgiProxy):
    client: httpx.AsyncClient

    async def startup(self) -> None:
        limits = httpx.Limits(
            max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE, keepalive_expiry=60
        )
        self.client = httpx.AsyncClient(
            base_url=self.upstream, limits=limits, timeout=30, trust_env=False
        )

    async def shutdown(self) -> None:
        await self.client.aclose()

    async def forward(
        self, method: str, target: bytes, headers: RawHeaders, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        request = self.client.build_request(
            method, target.decode("latin-1"), headers=headers, content=body or None
        )
        response = await self.client.send(request, stream=True)
        try:
            # aiter_raw, not aread: a proxy passes the body through without decoding it.
            content = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        return response.status_code, response.headers.raw, content


if __name__ == "__main__":
    config = settings()
    serve_uvicorn(HttpxProxy(config.upstream), config.port)
