"""Candidate (e): uvicorn (uvloop, httptools) with httpcore's connection pool, without httpx."""

from __future__ import annotations

import httpcore
from _common import POOL_SIZE, AsgiProxy, RawHeaders, serve_uvicorn, settings


class HttpcoreProxy(AsgiProxy):
    origin: httpcore.URL
    pool: httpcore.AsyncConnectionPool

    async def startup(self) -> None:
        self.origin = httpcore.URL(self.upstream)
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE, keepalive_expiry=60
        )

    async def shutdown(self) -> None:
        await self.pool.aclose()

    async def forward(
        self, method: str, target: bytes, headers: RawHeaders, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        url = httpcore.URL(
            scheme=self.origin.scheme, host=self.origin.host, port=self.origin.port, target=target
        )
        # httpcore adds Host from the URL; it leaves the body and its framing to the caller.
        if body:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        response = await self.pool.request(
            method, url, headers=headers, content=body or None, extensions={"timeout": _TIMEOUT}
        )
        return response.status, response.headers, response.content


_TIMEOUT = {"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}

if __name__ == "__main__":
    config = settings()
    serve_uvicorn(HttpcoreProxy(config.upstream), config.port)
