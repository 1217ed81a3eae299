"""The admin listener: uvicorn serving :func:`portico.admin.app.build_app` on a socket of its
own (``admin.listen``), on the event loop of the process that owns it.

- ``portico serve`` (one process): the gateway's event loop. The gateway's request path does
  not pass through it: the admin API has its own socket, its store reads and writes run in
  threads, and nothing of the gateway waits on it; an admin request only takes its turn on the
  loop, as an operations scrape does (docs/architecture.md).
- ``portico serve --workers N``: the supervisor's event loop, a process that serves no
  traffic.

uvicorn is driven through its ``Server`` (``startup``, ``main_loop``, ``shutdown``), not
``serve``: that one would take over SIGINT and SIGTERM, which the process's owner handles.
The socket is bound here, so that an address in use is reported as the gateway's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from portico.admin.app import build_app
from portico.admin.context import AdminContext

__all__ = ["AdminListener"]

log = logging.getLogger("portico.admin")

GRACEFUL_STOP = 5
"""Seconds admin requests in flight get to finish when the process stops."""


class AdminListener:
    def __init__(self, context: AdminContext) -> None:
        self.context = context
        self._server: uvicorn.Server | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port`` and serve; raises ``OSError`` when it cannot listen there."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        config = uvicorn.Config(
            build_app(self.context),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_STOP,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        self._loop_task = asyncio.get_running_loop().create_task(server.main_loop())
        log.info("admin API listening on http://%s:%d/admin/v1", host, self.port)

    async def stop(self) -> None:
        server, task = self._server, self._loop_task
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.shutdown()
        self._server = None
        if self._socket is not None:
            self._socket.close()
