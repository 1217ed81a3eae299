"""The running gateway: listening sockets, the current runtime, reloads and shutdown.

:class:`Gateway` owns the one mutable reference of the data plane, :attr:`Gateway.runtime`. A reload
(the config file changed, or ``SIGHUP``) loads and validates the file, builds a new snapshot and
swaps the reference; an invalid file is refused with its errors and the old snapshot keeps serving.
The gateway knows no policy: the composition root hands it ``rebuild``, which loads the file and
builds the snapshot (:func:`portico.assembly.runtime_builder`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from portico.config.errors import ConfigError
from portico.core.net import host_port
from portico.gateway.connection import ClientConnection
from portico.gateway.health import run_active_checks
from portico.gateway.snapshot import Runtime, retired_services
from portico.gateway.stats import GatewayStats
from portico.gateway.tls import server_ssl_context
from portico.gateway.upstream import Service, Target

log = logging.getLogger("portico.gateway")


@dataclass(frozen=True, slots=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileStamp | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True, slots=True)
class BoundListeners:
    """Listening sockets opened by another process (``serve --workers``: the supervisor binds
    them once, each gateway process serves them) instead of ``gateway.listen`` and
    ``gateway.tls.listen``."""

    plain: socket.socket
    tls: socket.socket | None = None


class Gateway:
    def __init__(
        self,
        runtime: Runtime,
        *,
        config_path: Path | None = None,
        rebuild: Callable[[Path, Runtime], Runtime] | None = None,
        on_config_applied: Callable[[Path, str], None] | None = None,
        watch_config: bool = True,
    ) -> None:
        """``rebuild(path, previous)`` loads the file at ``config_path`` and builds its snapshot
        (raising :class:`ConfigError` for an invalid file); without it, nothing reloads.
        ``watch_config=False``: the file is not watched (another process decides when to
        reload, and calls :meth:`reload` or :meth:`apply`)."""
        self.runtime = runtime
        self.config_path = config_path if rebuild is not None else None
        self._rebuild = rebuild
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._checks: dict[int, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._retired: list[Service] = []
        self._stamp = FileStamp.of(self.config_path) if self.config_path else None
        self._on_config_applied = on_config_applied
        self._watch = watch_config
        self._stopped = asyncio.Event()

    @property
    def stats(self) -> GatewayStats:
        """The data plane's counters, the same object across reloads."""
        return self.runtime.stats

    @property
    def tls_port(self) -> int:
        assert self._tls_server is not None
        return int(self._tls_server.sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        assert self._server is not None
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1])

    async def start(self, bound: BoundListeners | None = None) -> None:
        """Listen on ``gateway.listen`` (and ``gateway.tls.listen``), or serve ``bound``."""
        loop = asyncio.get_running_loop()
        listen = self.runtime.settings.listen
        if bound is not None:
            self._server = await loop.create_server(
                lambda: ClientConnection(self), sock=bound.plain, backlog=2048
            )
        else:
            self._server = await loop.create_server(
                lambda: ClientConnection(self),
                listen.host,
                listen.port,
                reuse_address=True,
                backlog=2048,
            )
        tls = self.runtime.settings.tls
        if tls is not None and bound is not None and bound.tls is not None:
            self._tls_server = await loop.create_server(
                lambda: ClientConnection(self, tls=True),
                sock=bound.tls,
                ssl=server_ssl_context(tls),
                backlog=2048,
            )
        elif tls is not None:
            self._tls_server = await loop.create_server(
                lambda: ClientConnection(self, tls=True),
                tls.listen.host,
                tls.listen.port,
                ssl=server_ssl_context(tls),
                reuse_address=True,
                backlog=2048,
            )
        if self._tls_server is not None:
            assert tls is not None
            log.info("gateway listening on https://%s", host_port(tls.listen.host, self.tls_port))
        self._sync_health_checks()
        self._background.append(loop.create_task(self._tick()))
        if self.config_path is not None and self._watch:
            self._background.append(loop.create_task(self._watch_config()))
        log.info("gateway listening on http://%s", host_port(listen.host, self.port))

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopped.set)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # -- reload --------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the config file again; returns whether the new config now serves."""
        if self.config_path is None or self._rebuild is None:
            return False
        self._stamp = FileStamp.of(self.config_path)
        try:
            runtime = self._rebuild(self.config_path, self.runtime)
        except ConfigError as exc:
            log.error("config reload refused; the previous config keeps serving:\n%s", exc)
            self.stats.reloaded(False)
            return False
        except Exception:
            log.exception("config reload failed; the previous config keeps serving")
            self.stats.reloaded(False)
            return False
        if runtime.settings.listen != self.runtime.settings.listen:
            log.warning("gateway.listen changed: it takes effect on restart")
        if runtime.settings.tls != self.runtime.settings.tls:
            log.warning("gateway.tls changed: it takes effect on restart")
        self.apply(runtime)
        self.stats.reloaded(True)
        if self._on_config_applied is not None:
            self._on_config_applied(self.config_path, _sha256(self.config_path))
        log.info("config reloaded (%d routes)", len(runtime.config.routes))
        return True

    def apply(self, runtime: Runtime) -> None:
        old, self.runtime = self.runtime, runtime
        for service in retired_services(old, runtime):
            service.retire()
            self._retired.append(service)
        self._sync_health_checks()

    def _sync_health_checks(self) -> None:
        loop = asyncio.get_running_loop()
        wanted: dict[int, tuple[Target, Service]] = {}
        for service in self.runtime.services.values():
            if service.spec.health_check.active is None:
                continue
            for target in service.targets:
                wanted[id(target)] = (target, service)
        for key in list(self._checks):
            if key not in wanted:
                self._checks.pop(key).cancel()
        for key, (target, _) in wanted.items():
            if key not in self._checks:
                self._checks[key] = loop.create_task(
                    run_active_checks(
                        target.url, target.health, target.ssl_context, target.server_name
                    )
                )

    async def _watch_config(self) -> None:
        assert self.config_path is not None
        while True:
            await asyncio.sleep(1.0)
            stamp = FileStamp.of(self.config_path)
            if stamp is not None and stamp != self._stamp:
                # Editors write in several steps; give the file a moment to settle.
                await asyncio.sleep(0.2)
                self.reload()

    async def _tick(self) -> None:
        """Timeouts and housekeeping for every connection, instead of a timer per request."""
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            await asyncio.sleep(0.1)
            ticks += 1
            now = loop.time()
            for service in self.runtime.services.values():
                service.check_timeouts(now)
            for service in list(self._retired):
                service.check_timeouts(now)
                if not any(t.inflight for t in service.targets):
                    self._retired.remove(service)
            if ticks % 10 == 0:
                for service in self.runtime.services.values():
                    service.sweep()
                for conn in list(self.connections):
                    conn.check_idle(now)

    # -- shutdown ------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to drain_timeout), then close."""
        self.draining = True
        for server in (self._server, self._tls_server):
            if server is not None:
                server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        deadline = asyncio.get_running_loop().time() + self.runtime.settings.drain_timeout
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.close_if_idle()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for task in [*self._checks.values(), *self._background]:
            task.cancel()
        await asyncio.gather(*self._checks.values(), *self._background, return_exceptions=True)
        self._checks.clear()
        self._background.clear()
        for service in self.runtime.services.values():
            service.retire()
        if self._server is not None:
            await self._server.wait_closed()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
