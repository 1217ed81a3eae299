"""``portico serve``: the embedded single-process mode.

Loads the config, prepares the store (migrations are applied on start for SQLite), records each
applied config revision, and runs the gateway on uvloop until SIGINT or SIGTERM, then drains.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import sqlalchemy as sa
import uvloop

from portico import _native
from portico.assembly import build_runtime, load_config_to_serve, runtime_builder
from portico.gateway.app import Gateway
from portico.identity.context import Extensions
from portico.identity.oauth.state import OAuthState
from portico.identity.state import IdentityState
from portico.operations.listener import Operations, ReadinessCheck
from portico.operations.metrics import registry
from portico.store.database import Database, create_engine_for
from portico.store.migrate import ensure_current
from portico.store.repositories import ConfigRevisions

log = logging.getLogger("portico")

SERVED_ENDPOINTS = ("oauth",)
"""The built-in endpoint providers (``assembly.ENDPOINTS``) that ``serve`` offers; each serves
nothing unless the config enables it (``identity.oauth``)."""


class RevisionRecorder:
    """Writes each applied config to ``config_revisions``, off the event loop."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine_for(url)
        self._repo = ConfigRevisions(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def readiness(self) -> ReadinessCheck:
        """``/readyz``'s store check: the database answers a query (off the event loop)."""

        async def check() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self._ping)

        return ReadinessCheck("store", check)

    def _ping(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def record(self, path: Path, sha256: str) -> None:
        body = path.read_text(encoding="utf-8")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._repo.record, sha256, str(path), body, "serve")
        future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("could not record the config revision: %s", future.exception())


async def run(config_path: Path) -> int:
    log.info("gateway code: %s", _native.status())
    config = load_config_to_serve(config_path)
    raw = config_path.read_bytes()  # noqa: ASYNC240  (once, before serving starts)
    url = config.database.url
    # SQLite: migrate in place. PostgreSQL: refuse to start on an old schema, since migrations
    # there are an operator's decision (`portico db upgrade`).
    ensure_current(url)
    recorder = RevisionRecorder(url)
    # Consumers and API keys, kept current from the store by a poll of its change counter.
    identity = IdentityState.open(config)
    # The OAuth server's signing keys and revoked tokens, kept current the same way.
    oauth = OAuthState(Database(url))
    oauth.load()

    def config_applied(path: Path, sha256: str) -> None:
        identity.use_config(gateway.runtime.config)
        recorder.record(path, sha256)

    extensions = Extensions(identity=identity, oauth=oauth)
    gateway = Gateway(
        build_runtime(config, extensions=extensions, endpoints=SERVED_ENDPOINTS),
        config_path=config_path,
        rebuild=runtime_builder(extensions, SERVED_ENDPOINTS),
        on_config_applied=config_applied,
    )
    await gateway.start()
    operations: Operations | None = None
    if config.operations.enabled:
        operations = Operations(registry(gateway), (recorder.readiness(),))
        await operations.start(config.operations.listen.host, config.operations.listen.port)
    identity_watch = asyncio.get_running_loop().create_task(identity.watch())
    oauth_watch = asyncio.get_running_loop().create_task(oauth.run())
    recorder.record(config_path, hashlib.sha256(raw).hexdigest())
    gateway.install_signal_handlers()
    listen = config.gateway.listen
    print(f"Portico gateway on http://{listen.host}:{gateway.port}", flush=True)
    if operations is not None:
        host = config.operations.listen.host
        print(
            f"Portico operations on http://{host}:{operations.port} (/healthz, /readyz, /metrics)",
            flush=True,
        )
    await gateway.wait_stopped()
    log.info("shutting down: draining in-flight requests")
    if operations is not None:
        await operations.stop()
    await gateway.stop()
    identity_watch.cancel()
    oauth_watch.cancel()
    await asyncio.gather(identity_watch, oauth_watch, return_exceptions=True)
    identity.close()
    oauth.close()
    recorder.close()
    return 0


def serve(config_path: Path) -> int:
    return uvloop.run(run(config_path))
