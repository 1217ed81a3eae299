"""What every candidate proxy shares: its command line, the headers a proxy must not forward,
and the ASGI side for the candidates that are ASGI apps.

A candidate is the smallest forwarding proxy that is still correct on one stack: it forwards the
method, path, query, headers and body to the upstream over pooled keep-alive connections, and
returns the upstream's status, headers and body. Hop-by-hop headers are not forwarded either way.
"""

from __future__ import annotations

import abc
import argparse
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

HOST = "127.0.0.1"
UPSTREAM_ENV = "CANDIDATE_UPSTREAM"
POOL_SIZE = 100
"""Upstream connections each candidate may keep; more than the benchmark's client connections."""

# RFC 9110 section 7.6.1, plus the framing headers the server or client recomputes itself.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)


def forwardable(headers: Iterable[tuple[bytes, bytes]], *, drop_host: bool = False) -> RawHeaders:
    """The end-to-end headers: hop-by-hop ones and those the Connection header names removed."""
    items = [(name.lower(), value) for name, value in headers]
    dropped = set(_HOP_BY_HOP)
    for name, value in items:
        if name == b"connection":
            dropped.update(token.strip().lower() for token in value.split(b","))
    if drop_host:
        dropped.add(b"host")
    return [(name, value) for name, value in items if name not in dropped]


@dataclass(frozen=True, slots=True)
class Settings:
    port: int
    upstream: str
    """``http://host:port`` without a trailing slash."""


def settings() -> Settings:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    args = parser.parse_args()
    upstream = args.upstream.rstrip("/")
    # Servers that import the app by name in a worker process find the upstream here.
    os.environ[UPSTREAM_ENV] = upstream
    return Settings(port=args.port, upstream=upstream)


def upstream_from_env() -> str:
    return os.environ.get(UPSTREAM_ENV, "http://127.0.0.1:8080")


class AsgiProxy(abc.ABC):
    """An ASGI app that forwards every HTTP request; subclasses bring the upstream client."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    @abc.abstractmethod
    async def startup(self) -> None:
        """Creates the client; it must be made inside the server's running event loop."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Closes the client's pooled connections."""

    @abc.abstractmethod
    async def forward(
        self, method: str, target: bytes, headers: RawHeaders, body: bytes
    ) -> tuple[int, RawHeaders, bytes]:
        """Sends one request upstream; returns status, raw headers and the whole body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            status, headers, content = await self.forward(
                scope["method"], target, forwardable(scope["headers"], drop_host=True), body
            )
        except Exception:  # any upstream failure becomes a 502, as a proxy would answer
            status, headers, content = 502, [(b"content-type", b"text/plain")], b"bad gateway\n"
        else:
            headers = forwardable(headers)
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def serve_uvicorn(app: AsgiProxy, port: int) -> None:
    """uvicorn with uvloop and httptools, one process, no access log."""
    import uvicorn

    uvicorn.run(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # The upstream's Server and Date headers are forwarded; do not add a second pair.
        server_header=False,
        date_header=False,
    )
