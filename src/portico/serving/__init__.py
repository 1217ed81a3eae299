"""``portico serve``: the embedded single-process mode.

Loads the config, prepares the store (migrations are applied on start for SQLite), records each
applied config revision, and runs the gateway on uvloop until SIGINT or SIGTERM, then drains.

What can stop it from starting is raised as a :class:`~portico.core.errors.PorticoError` with a
one-line message: a refused config, the store's errors, and :class:`CannotListen` for an address
it cannot listen on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop
from prometheus_client import Metric

from portico import _native
from portico.assembly import build_runtime, load_config, load_config_text, load_config_to_serve
from portico.checking import check_config_text
from portico.config.loader import CheckedConfig
from portico.config.model import Listen, PorticoConfig
from portico.core.net import host_port
from portico.gateway.app import Gateway
from portico.gateway.snapshot import Runtime
from portico.gateway.stats import GatewayStats
from portico.identity.context import Extensions
from portico.identity.oauth.state import OAuthState
from portico.identity.state import IdentityState
from portico.observability.tracing import SpanCounter, Tracing, start_tracing
from portico.operations.listener import Operations, ReadinessCheck
from portico.operations.metrics import registry
from portico.policies.rate_limit.usage import usage_report
from portico.serving.entities import ServedEntities, latest_state, seed_state
from portico.serving.events import ServedEvents
from portico.serving.listening import CannotListen, listening
from portico.serving.revisions import RevisionRecorder
from portico.shared import open_shared_state
from portico.shared.state import SharedState, SharedStateUnavailable
from portico.store.database import Database
from portico.store.repositories import StateRevision
from portico.store.secrets import Secrets, current_store_secrets
from portico.store.secrets.stored import StoredSecrets

if TYPE_CHECKING:
    from portico.admin.listener import AdminListener

log = logging.getLogger("portico")

SERVED_ENDPOINTS = ("oauth",)
"""The built-in endpoint providers (``assembly.ENDPOINTS``) that ``serve`` offers; each serves
nothing unless the config enables it (``identity.oauth``)."""

__all__ = [
    "CannotListen",
    "RevisionRecorder",
    "ServedEntities",
    "ServedGateway",
    "admin_banner",
    "latest_state",
    "prepare_store",
    "run",
    "seed_state",
    "serve",
    "start_admin",
    "stop_admin",
    "with_listen",
]


def with_listen(config: PorticoConfig, listen: tuple[str, int] | None) -> PorticoConfig:
    """``config`` with ``gateway.listen`` replaced by ``serve --listen`` (when given)."""
    if listen is None:
        return config
    host, port = listen
    gateway = config.gateway.model_copy(update={"listen": Listen(host=host, port=port)})
    return config.model_copy(update={"gateway": gateway})


def _keeping_listen(
    rebuild: Callable[[Path, Runtime], Runtime], listen: tuple[str, int] | None
) -> Callable[[Path, Runtime], Runtime]:
    """A reload keeps ``serve --listen``: the file's address would otherwise read as a change
    (which takes effect on restart) at every reload."""
    if listen is None:
        return rebuild

    def rebuild_keeping_listen(path: Path, previous: Runtime) -> Runtime:
        runtime = rebuild(path, previous)
        config = with_listen(runtime.config, listen)
        return dataclasses.replace(runtime, config=config, settings=config.gateway)

    return rebuild_keeping_listen


def prepare_store(config: PorticoConfig) -> Secrets:
    """What serving needs of the store, done once before any gateway process starts: the
    secrets keys, the schema (SQLite migrated in place; PostgreSQL must be current, since
    migrations there are an operator's decision: `portico db upgrade`), and no stored secret
    that the configured keys cannot open (a refusal now, in one line, rather than failures
    later)."""
    url = config.database.url
    secrets = current_store_secrets(url, config.database.secrets_key_file)
    with Database(url) as database:
        StoredSecrets(database).check_openable(secrets)
    return secrets


class ServedGateway:
    """The live parts of one gateway process: the identity and OAuth state, kept current from
    the store, and the gateway serving a snapshot built with them. ``portico serve`` makes one;
    with ``--workers``, each gateway process does (:mod:`portico.supervisor.worker`).
    ``secrets`` opens and seals the secrets stored (the OAuth server's signing keys)."""

    def __init__(
        self,
        config: PorticoConfig,
        config_path: Path,
        listen: tuple[str, int] | None,
        secrets: Secrets,
        *,
        on_config_applied: Callable[[Path, str, PorticoConfig], None] | None = None,
        watch_config: bool = True,
        entities: ServedEntities | None = None,
        file_text: str | None = None,
    ) -> None:
        """``entities``: the store's state revision ``config`` was built with
        (``entities.source: store``), followed from now on; ``file_text``: the file ``config``
        was loaded from, what a new revision is served with until the file is reloaded."""
        url = config.database.url
        self.entities = entities
        self._config_path = config_path
        self._file_text = file_text if file_text is not None else _read_text(config_path)
        # Consumers and API keys, kept current from the store by a poll of its change counter.
        self.identity = IdentityState.open(config)
        # The OAuth server's signing keys and revoked tokens, kept current the same way.
        self.oauth = OAuthState(Database(url), secrets)
        self.oauth.load()
        self._listen = listen
        self._secrets = secrets
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping_events: set[asyncio.Task[None]] = set()

        def config_applied(path: Path, sha256: str) -> None:
            self.identity.use_config(self.gateway.runtime.config)
            if self.events is not None:
                self.events.config_changed()
            if on_config_applied is not None:
                on_config_applied(path, sha256, self.gateway.runtime.config)

        # Rate-limit counters, cached responses, idempotency records, nonces: this process's
        # memory, or Redis (the config's redis section), for the life of the process.
        self.shared = open_shared_state(config.redis)
        stats = GatewayStats()
        # Publishing, endpoints and (unless events.delivery.enabled is off) delivering.
        self.events = ServedEvents.open(config, secrets, lambda: self.gateway.runtime.config, stats)
        # Spans of exchanges, when the config asks for them: started here, in the process that
        # serves (with --workers, each gateway process after it was spawned), never inherited.
        self.tracing = start_tracing(config.tracing, span_counter(stats))
        self._tracing_settings = config.tracing
        self.extensions = Extensions(
            identity=self.identity,
            oauth=self.oauth,
            shared=self.shared,
            stats=stats,
            tracing=self.tracing,
            publisher=self.events.events.publisher if self.events is not None else None,
            endpoints=self.events.endpoints() if self.events is not None else (),
        )
        self.gateway = Gateway(
            build_runtime(config, extensions=self.extensions, endpoints=SERVED_ENDPOINTS),
            config_path=config_path,
            rebuild=_keeping_listen(self._rebuild, listen),
            on_config_applied=config_applied,
            watch_config=watch_config,
        )

    def keep_current(self) -> None:
        """Start polling the store for identity and OAuth changes (on the running loop)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.identity.watch()),
            loop.create_task(self.oauth.run()),
        ]
        if self.entities is not None:
            watch = self.entities.watch(self._check_revision, self.swap)
            self._tasks.append(loop.create_task(watch))
        if self.events is not None:
            self._tasks.append(loop.create_task(self.events.start()))

    def use_config(self, config: PorticoConfig) -> None:
        """Serve ``config``, already loaded and checked (by another process: ``--workers``);
        raises what building its snapshot raises, and the old one keeps serving."""
        config = with_listen(config, self._listen)
        gateway = self.gateway
        runtime = self._build(config, gateway.runtime)
        gateway.apply(runtime)
        gateway.stats.reloaded(True)
        self.identity.use_config(config)

    def use_text(self, text: str) -> None:
        """Serve the config file's ``text``, checked by another process (``--workers``): with
        the store's entities in store mode; raises as :meth:`use_config` does."""
        if self.entities is None:
            self.use_config(load_config_text(text, str(self._config_path)))
        else:
            checked = self._check(text)
            self.use_config(checked.config)
            self.entities.file_differs(checked)
        self._file_text = text

    def _rebuild(self, path: Path, previous: Runtime) -> Runtime:
        """A reload of the config file (the gateway calls it). In store mode: its other
        sections, and the store's entities (an edit of the file's is not served; one line says
        so)."""
        if self.entities is None:
            return self._build(load_config(path), previous)
        text = _read_text(path)
        checked = self._check(text)
        runtime = self._build(checked.config, previous)
        self._file_text = text
        self.entities.file_differs(checked)
        return runtime

    def _check(self, text: str, revision: StateRevision | None = None) -> CheckedConfig:
        assert self.entities is not None
        stored = self.entities.stored(revision)
        return check_config_text(text, str(self._config_path), entities=stored)

    def _check_revision(self, revision: StateRevision) -> CheckedConfig:
        """Check a new state revision with the file's other sections (in the poll's thread);
        what it returns is served on the event loop by :meth:`swap`."""
        return self._check(self._file_text, revision)

    def swap(self, revision: StateRevision, checked: CheckedConfig) -> None:
        """Serve a new state revision (on the event loop): the same snapshot swap as a reload;
        requests in flight finish on the previous snapshot."""
        self.use_config(checked.config)
        log.info(
            "serving store revision %d (%s, %d routes)",
            revision.id,
            revision.source,
            len(checked.config.routes),
        )

    def _build(self, config: PorticoConfig, previous: Runtime) -> Runtime:
        """The snapshot of ``config``. A changed ``tracing`` section starts a new tracing for
        it (or none), which serves from this snapshot on; the previous one exports what it has
        queued and stops, in the background. Spans of the requests still in flight on the
        previous snapshot are lost."""
        extensions = self.extensions
        started: Tracing | None = None
        retraced = config.tracing != self._tracing_settings
        if retraced:
            started = start_tracing(config.tracing, span_counter(extensions.stats))
            extensions = dataclasses.replace(extensions, tracing=started)
        # An events section added or removed by a reload: this process's events open (publishing,
        # the consumer API, the inbound paths, delivering) or close with the snapshot.
        opened: ServedEvents | None = None
        if config.events is not None and self.events is None:
            opened = ServedEvents.open(
                config, self._secrets, lambda: self.gateway.runtime.config, extensions.stats
            )
            assert opened is not None
            extensions = dataclasses.replace(
                extensions, publisher=opened.events.publisher, endpoints=opened.endpoints()
            )
        elif config.events is None and self.events is not None:
            extensions = dataclasses.replace(extensions, publisher=None, endpoints=())
        try:
            runtime = build_runtime(config, previous, extensions, SERVED_ENDPOINTS)
        except BaseException:
            if started is not None:
                _stop_in_background(started)
            if opened is not None:
                opened.events.database.dispose()
            raise
        if opened is not None or (config.events is None and self.events is not None):
            self._swap_events(opened)
            self.extensions = extensions
        if retraced:
            if self.tracing is not None:
                _stop_in_background(self.tracing)
            self.extensions = extensions
            self.tracing = started
            self._tracing_settings = config.tracing
            log.info("tracing %s", "restarted" if started is not None else "off")
        return runtime

    def _swap_events(self, opened: ServedEvents | None) -> None:
        """Serve with ``opened`` (started now, on the running loop), or with no events: the
        previous ones stop delivering (attempts in flight finish) in the background."""
        loop = asyncio.get_running_loop()
        previous, self.events = self.events, opened
        if previous is not None:
            log.info("events section removed: no more publishing or delivering here")
            stopping = loop.create_task(previous.stop())
            self._stopping_events.add(stopping)
            stopping.add_done_callback(self._stopping_events.discard)
        if opened is not None:
            log.info("events section added: publishing and delivering from now on")
            self._tasks.append(loop.create_task(opened.start()))

    async def close(self) -> None:
        """Drain the gateway (within ``gateway.drain_timeout``), then stop polling the store."""
        await self.gateway.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._stopping_events, return_exceptions=True)
        if self.events is not None:
            await self.events.stop()
        self.identity.close()
        self.oauth.close()
        if self.entities is not None:
            self.entities.database.dispose()
        await self.shared.close()
        if self.tracing is not None:
            # The last spans, within tracing.shutdown_timeout, off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)


class _CurrentEventsMetrics:
    """prometheus_client's collector protocol over the events a :class:`ServedGateway` serves
    at the moment of the scrape (none: nothing)."""

    def __init__(self, served: ServedGateway) -> None:
        self._served = served

    def collect(self) -> Iterator[Metric]:
        events = self._served.events
        if events is not None:
            yield from events.events.metrics.collect()


async def run(config_path: Path, listen: tuple[str, int] | None = None) -> int:
    log.info("gateway code: %s", _native.status())
    config = with_listen(load_config_to_serve(config_path), listen)
    raw = config_path.read_bytes()  # noqa: ASYNC240  (once, before serving starts)
    text = raw.decode("utf-8-sig")
    url = config.database.url
    secrets = prepare_store(config)
    entities = seed_state(config_path) if config.entities.source == "store" else None
    if entities is not None:
        served_config = check_config_text(text, str(config_path), entities=entities.stored())
        config = with_listen(served_config.config, listen)
    recorder = RevisionRecorder(url)
    served = ServedGateway(
        config,
        config_path,
        listen,
        secrets,
        on_config_applied=recorder.record,
        entities=entities,
        file_text=text,
    )
    gateway = served.gateway
    shared = served.shared
    try:
        await listening("gateway.listen", config.gateway.listen, gateway.start)
    except CannotListen as exc:
        # The gateway opens HTTP, then HTTPS; the OS error names the address it was binding
        # ("... on address ('0.0.0.0', 8443): ..."), which tells which of the two failed.
        tls = config.gateway.tls
        if tls is not None and f", {tls.listen.port})" in str(exc.error):
            raise CannotListen(
                "gateway.tls.listen", tls.listen.host, tls.listen.port, exc.error
            ) from exc.error
        raise
    operations: Operations | None = None
    if config.operations.enabled:
        checks = [recorder.readiness()]
        if not shared.local:
            checks.append(shared_state_readiness(shared))
        # A consumer's rate-limit usage, read from this process's counters (`portico usage`
        # asks here when there is no Redis to read them from).
        usage = partial(usage_report, lambda: gateway.runtime.config, shared)
        operations = Operations(registry(gateway), checks, reports={"/usage/": usage})
        # The events' metrics, whichever events the process serves now (a reload may add or
        # remove the section).
        operations.metrics.register(_CurrentEventsMetrics(served))
        where = config.operations.listen
        try:
            await listening(
                "operations.listen", where, lambda: operations.start(where.host, where.port)
            )
        except CannotListen:
            await gateway.stop()
            raise
    try:
        admin = await start_admin(
            config, lambda: gateway.runtime.config, shared, secrets, config_path
        )
    except CannotListen:
        if operations is not None:
            await operations.stop()
        await gateway.stop()
        raise
    served.keep_current()
    recorder.record(config_path, hashlib.sha256(raw).hexdigest(), config)
    gateway.install_signal_handlers()
    address = host_port(config.gateway.listen.host, gateway.port)
    print(f"Portico gateway on http://{address}", flush=True)
    if operations is not None:
        address = host_port(config.operations.listen.host, operations.port)
        print(f"Portico operations on http://{address} (/healthz, /readyz, /metrics)", flush=True)
    if admin is not None:
        print(admin_banner(config, admin.port), flush=True)
    await gateway.wait_stopped()
    log.info("shutting down: draining in-flight requests")
    if operations is not None:
        await operations.stop()
    if admin is not None:
        await stop_admin(admin)
    await served.close()
    recorder.close()
    return 0


async def start_admin(
    config: PorticoConfig,
    running: Callable[[], PorticoConfig],
    shared: SharedState,
    secrets: Secrets,
    config_path: Path | None = None,
) -> AdminListener | None:
    """The admin listener (``admin.listen``) on this event loop, when the config enables it;
    ``running`` is the config the gateway processes serve now; ``config_path`` the file, whose
    other sections an edit of the store's entities is checked with. Its modules (FastAPI,
    uvicorn) are imported only then: a Portico without an admin section does not load them."""
    settings = config.admin
    if settings is None or not settings.enabled:
        return None
    from portico.admin.context import AdminContext
    from portico.admin.listener import AdminListener

    context = AdminContext(
        Database(config.database.url),
        running,
        shared,
        secrets,
        config_path=config_path,
        entities_source=config.entities.source,
    )
    listener = AdminListener(context)
    where = settings.listen
    try:
        await listening("admin.listen", where, lambda: listener.start(where.host, where.port))
    except CannotListen:
        context.database.dispose()
        raise
    return listener


async def stop_admin(listener: AdminListener) -> None:
    await listener.stop()
    listener.context.database.dispose()


def admin_banner(config: PorticoConfig, port: int) -> str:
    assert config.admin is not None
    address = host_port(config.admin.listen.host, port)
    return f"Portico admin API on http://{address}/admin/v1 (docs: /admin/v1/docs)"


def _stop_in_background(tracing: Tracing) -> None:
    threading.Thread(target=tracing.shutdown, name="portico-tracing-stop", daemon=True).start()


def span_counter(stats: GatewayStats) -> SpanCounter:
    """What tracing counts, as ``portico_tracing_spans_total{outcome}`` (docs/metrics.md):
    the metric is made when tracing starts, so that a Portico without tracing shows none."""

    def count(outcome: str, spans: int) -> None:
        counter = stats.counter(
            "portico_tracing_spans",
            "Spans of exchanges by outcome: exported to the collector, dropped (the export "
            "queue was full), failed (the collector did not take them).",
            ("outcome",),
        )
        counter.add((outcome,), spans)

    return count


def shared_state_readiness(shared: SharedState) -> ReadinessCheck:
    """``/readyz`` reports Redis without failing on it: each policy chooses to fail open or
    closed while Redis is away (docs/shared-state.md)."""

    async def check() -> None:
        if not await shared.ping():
            raise SharedStateUnavailable(f"{shared.kind} does not answer PING")

    return ReadinessCheck(shared.kind, check, required=False)


def serve(config_path: Path, listen: tuple[str, int] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; ``listen`` replaces ``gateway.listen`` (``--listen``)."""
    return uvloop.run(run(config_path, listen))


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig")
