"""The supervisor of ``portico serve --workers N``: one process that starts, watches, reloads
and drains N gateway processes, and answers for all of them on the operations listener.

Before any gateway process starts, it does once what ``portico serve`` does at start: it checks
the config, migrates the store (SQLite; PostgreSQL must be current), records the config
revision, binds the listening sockets (a port in use is one line and a non-zero exit) and opens
the operations listener. Then:

- a gateway process that exits is replaced in its slot, after a backoff that doubles from 0.1 s
  to 10 s while replacements keep dying young (a process that served 10 s is replaced at once),
  each exit logged with the process's pid and its exit status or signal; one that stops
  answering (its counters are asked for every second) for ``gateway.worker_timeout`` is killed,
  and so replaced;
- SIGHUP, or an edit of the config file, checks the file once: refused, it is logged and every
  process keeps its config; accepted, every process is handed the checked text, and the
  revision is recorded once;
- SIGINT or SIGTERM drains every process (in-flight requests finish within
  ``gateway.drain_timeout``; a process still there after it and a grace period is killed), and
  the supervisor exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import uvloop

from portico import serving
from portico.assembly import load_config, load_config_text, load_config_to_serve
from portico.config.errors import ConfigError
from portico.config.model import PorticoConfig
from portico.config.workers import WorkersSetting, worker_count
from portico.core.errors import PorticoError
from portico.core.net import host_port
from portico.gateway.app import FileStamp
from portico.gateway.stats import GatewayStats
from portico.operations.listener import Operations, ReadinessCheck
from portico.operations.metrics import TargetView
from portico.policies.catalogue import POLICIES
from portico.policies.registry import per_process_state_errors
from portico.serving import (
    CannotListen,
    RevisionRecorder,
    admin_banner,
    shared_state_readiness,
    start_admin,
    stop_admin,
    with_listen,
)
from portico.shared import open_shared_state
from portico.shared.state import SharedState
from portico.supervisor.channel import Channel, ChannelClosed, Message
from portico.supervisor.collector import registry
from portico.supervisor.counters import Tally, add, summed
from portico.supervisor.exits import describe_exit
from portico.supervisor.listeners import Listeners, bind_all
from portico.supervisor.worker import WorkerSpec

if TYPE_CHECKING:
    from portico.admin.listener import AdminListener

__all__ = ["Supervisor", "WorkerFailed", "serve"]

log = logging.getLogger("portico.supervisor")

FIRST_BACKOFF = 0.1
MAX_BACKOFF = 10.0
STABLE_RUN = 10.0
"""A process that served this long before it died is replaced without waiting."""
POLL_INTERVAL = 1.0
"""How often the counters are pulled between scrapes: what a killed process takes with it."""
ASK_TIMEOUT = 1.5
"""Longest wait for a gateway process's answer (below the listener's 2 s per check)."""
START_TIMEOUT = 120.0
"""Longest wait for the first set of gateway processes to serve (a store that hangs...)."""
KILL_GRACE = 5.0
"""Beyond ``gateway.drain_timeout``, before a process that does not exit is killed."""


class WorkerFailed(PorticoError):
    """A gateway process could not start when ``serve --workers`` started."""


def serve(
    config_path: Path,
    listen: tuple[str, int] | None = None,
    workers: WorkersSetting | None = None,
    log_options: Sequence[str] = (),
) -> int:
    """``portico serve``: one process when :func:`worker_count` says 1, else a supervisor and
    its gateway processes (each started with ``log_options``, the command's log options)."""
    config = with_listen(load_config_to_serve(config_path), listen)
    count = worker_count(config, workers)
    refused = per_process_state_errors(POLICIES, config, count)
    if refused:
        location, why = refused[0]
        where = ".".join(str(part) for part in location)
        raise PerProcessState(f"{config_path}: {where}: {why} (--workers {count})")
    if count == 1:
        return serving.serve(config_path, listen)
    raw = config_path.read_bytes()
    supervisor = Supervisor(config_path, listen, count, config, raw, log_options)
    return uvloop.run(supervisor.run())


class PerProcessState(PorticoError):
    """``serve --workers N`` asked for several processes, and a policy's shared state would be
    per process (no ``redis`` section)."""


class Worker:
    """One slot of the supervisor: the process that fills it now, and what it counted."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.process: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.serving = False
        self.started_at = 0.0
        self.last: Tally | None = None
        """The counters it reported last (``None`` once added to the departed's)."""
        self.quick_deaths = 0
        self.state = "starting"
        self.start_result: asyncio.Future[str | None] | None = None
        """``None`` once it serves, or why it could not start."""
        self.text = ""
        """The config text it was started with."""
        self.silent_since: float | None = None
        """When it last failed to answer, the loop's time of the ask, while it has not answered
        since."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    def __init__(
        self,
        config_path: Path,
        listen: tuple[str, int] | None,
        count: int,
        config: PorticoConfig,
        raw: bytes,
        log_options: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.listen = listen
        self.config = config
        self._shared: SharedState | None = None
        """The Redis of the config's ``redis`` section, for ``/readyz``."""
        self.text = raw.decode("utf-8-sig")
        self._sha256 = hashlib.sha256(raw).hexdigest()
        self._log_options = tuple(log_options)
        self.workers = [Worker(slot) for slot in range(1, count + 1)]
        self.stats = GatewayStats(enabled=False)
        """The reloads of the whole set: one per SIGHUP or edit, as with one process."""
        self.departed = GatewayStats()
        """The counters of processes that exited."""
        self.counted: tuple[GatewayStats, list[TargetView]] = (GatewayStats(), [])
        """Every process's counters summed, and their views of the targets, as of the last
        :meth:`refresh`: what ``/metrics`` shows."""
        self.restarts = 0
        self.stopping = False
        self._started = False
        self._listeners: Listeners | None = None
        self._recorder: RevisionRecorder | None = None
        self._stamp = FileStamp.of(config_path)
        self._refused_sha256 = ""
        """The SHA-256 of the last file refused, until one is accepted ("": none)."""
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the whole run -------------------------------------------------------------------------

    async def run(self) -> int:
        url = self.config.database.url
        # Once, before any gateway process, as for `portico serve`: the store's schema and its
        # secrets. Each process then reads the same keys: the environment they inherit, or the
        # key file this one made if it had to (a SQLite database's, docs/secrets.md).
        self._secrets = serving.prepare_store(self.config)
        if self.config.entities.source == "store":
            # Seeded once, here, before any gateway process reads the store's state.
            serving.seed_state(self.config_path).database.dispose()
        self._recorder = RevisionRecorder(url)
        try:
            return await self._run(self._recorder)
        finally:
            self._recorder.close()

    async def _run(self, recorder: RevisionRecorder) -> int:
        config = self.config
        self._stop = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._listeners = listeners = bind_all(config)
        operations: Operations | None = None
        admin: AdminListener | None = None
        try:
            if config.operations.enabled:
                operations = self._operations(recorder)
                where = config.operations.listen
                try:
                    await operations.start(where.host, where.port)
                except OSError as exc:
                    raise CannotListen("operations.listen", where.host, where.port, exc) from exc
            # The admin API runs here, in the one process that serves no traffic; its changes
            # reach the gateway processes through the store, which each of them polls.
            if self._shared is None:
                self._shared = open_shared_state(config.redis)
            admin = await start_admin(
                config, lambda: self.config, self._shared, self._secrets, self.config_path
            )
            recorder.record(self.config_path, self._sha256, config)
            await self._start_all()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop.set)
            self._spawn_task(self._watch_config())
            if operations is not None:
                self._spawn_task(self._poll_counters())
            port = listeners.plain.getsockname()[1]
            print(f"Portico gateway on http://{host_port(config.gateway.listen.host, port)}")
            if operations is not None:
                address = host_port(config.operations.listen.host, operations.port)
                print(f"Portico operations on http://{address} (/healthz, /readyz, /metrics)")
            if admin is not None:
                print(admin_banner(config, admin.port))
            sys.stdout.flush()
            await self._stop.wait()
            log.info("shutting down: draining %d gateway processes", len(self.workers))
            if operations is not None:
                await operations.stop()
                operations = None
            await self._drain()
        finally:
            if operations is not None:
                await operations.stop()
            if admin is not None:
                await stop_admin(admin)
            if not self.stopping:
                await self._drain()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._shared is not None:
                await self._shared.close()
        return 0

    def _operations(self, recorder: RevisionRecorder) -> Operations:
        checks = [recorder.readiness()] + [
            ReadinessCheck(f"worker {w.slot}", partial(self._ready, w)) for w in self.workers
        ]
        if self.config.redis is not None:
            # Listed as a gateway process lists it: degraded, not unready, while it is away.
            self._shared = open_shared_state(self.config.redis)
            checks.append(shared_state_readiness(self._shared))
        liveness = [
            ReadinessCheck(f"worker {w.slot}", partial(self._alive, w)) for w in self.workers
        ]
        return Operations(registry(self, self.config), checks, liveness, before_scrape=self.refresh)

    # -- starting and replacing gateway processes ---------------------------------------------

    async def _start_all(self) -> None:
        for worker in self.workers:
            await self._spawn(worker)
        waiting = [w.start_result for w in self.workers if w.start_result is not None]
        try:
            async with asyncio.timeout(START_TIMEOUT):
                results = await asyncio.gather(*waiting)
        except TimeoutError:
            results = [
                None if w.serving else f"it did not serve within {START_TIMEOUT:g}s"
                for w in self.workers
            ]
        failed = [(w, why) for w, why in zip(self.workers, results, strict=True) if why]
        if failed:
            await self._drain()
            worker, why = failed[0]
            raise WorkerFailed(f"gateway process {worker.slot} could not start: {why}")
        self._started = True
        pids = ", ".join(str(w.pid) for w in self.workers)
        log.info("%d gateway processes serve (pids %s)", len(self.workers), pids)

    async def _spawn(self, worker: Worker) -> None:
        listeners = self._listeners
        assert listeners is not None
        ours, theirs = socket.socketpair()
        spec = WorkerSpec(
            slot=worker.slot,
            config_path=str(self.config_path),
            listen=self.listen,
            control_fd=theirs.fileno(),
            plain_fd=listeners.plain.fileno(),
            tls_fd=None if listeners.tls is None else listeners.tls.fileno(),
        )
        fds = [spec.control_fd, spec.plain_fd] + ([] if spec.tls_fd is None else [spec.tls_fd])
        loop = asyncio.get_running_loop()
        worker.start_result = loop.create_future()
        worker.serving = False
        worker.state = "starting"
        try:
            # A new interpreter, not a fork: the supervisor has an event loop and threads, which
            # a forked child would share in a broken state. The sockets pass as descriptors.
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "portico.cli.worker",
                *self._log_options,
                "--",
                *spec.to_argv(),
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            ours.close()
            worker.start_result.set_result(f"cannot start a process: {exc}")
            return
        finally:
            theirs.close()
        worker.process = process
        worker.started_at = loop.time()
        worker.silent_since = None
        channel = worker.channel = await Channel.open(ours)
        self._spawn_task(channel.run(partial(self._on_event, worker, process)))
        self._spawn_task(self._watch_exit(worker, process))
        worker.text = self.text
        with contextlib.suppress(ChannelClosed):
            await channel.send({"event": "start", "text": self.text})

    def _on_event(
        self, worker: Worker, process: asyncio.subprocess.Process, event: Message
    ) -> None:
        if worker.process is not process:
            return
        kind = event.get("event")
        if kind == "started":
            worker.serving = True
            worker.state = "serving"
            log.info("gateway process %d serves (pid %d)", worker.slot, process.pid)
            if worker.start_result is not None and not worker.start_result.done():
                worker.start_result.set_result(None)
            if worker.text != self.text:
                # A reload came while it started with the text before: it gets the new one now.
                self._spawn_task(self._catch_up(worker))
        elif kind == "failed":
            why = str(event.get("message", "no reason given"))
            worker.state = f"could not start: {why}"
            if self._started:
                log.error("gateway process %d could not start: %s", worker.slot, why)
            if worker.start_result is not None and not worker.start_result.done():
                worker.start_result.set_result(why)

    async def _watch_exit(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        returncode = await process.wait()
        if worker.channel is not None:
            worker.channel.close()
        worker.serving = False
        if worker.last is not None:
            add(self.departed, worker.last)
            worker.last = None
        how = describe_exit(returncode)
        if worker.start_result is not None and not worker.start_result.done():
            worker.start_result.set_result(f"it {how} before serving; the log above says why")
        if self.stopping:
            log.info("gateway process %d (pid %d) stopped", worker.slot, process.pid)
            return
        if not self._started:
            return  # the start fails as a whole (_start_all)
        ran = asyncio.get_running_loop().time() - worker.started_at
        worker.quick_deaths = 0 if ran >= STABLE_RUN else worker.quick_deaths + 1
        delay = 0.0 if worker.quick_deaths == 0 else FIRST_BACKOFF * 2 ** (worker.quick_deaths - 1)
        delay = min(delay, MAX_BACKOFF)
        worker.state = f"replaced: the last process {how}"
        log.error(
            "gateway process %d (pid %d) %s; a new one starts in %.1fs",
            worker.slot,
            process.pid,
            how,
            delay,
            extra={"slot": worker.slot, "worker_pid": process.pid, "returncode": returncode},
        )
        await asyncio.sleep(delay)
        if self.stopping:
            return
        self.restarts += 1
        await self._spawn(worker)

    # -- reloads -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Check the config file once; hand it to every gateway process if it is accepted."""
        if self._started and not self.stopping:
            self._spawn_task(self._reload())

    async def _reload(self) -> None:
        async with self._reloading:
            path = self.config_path
            self._stamp = FileStamp.of(path)
            sha256 = ""
            try:
                raw = path.read_bytes()
                sha256 = hashlib.sha256(raw).hexdigest()
                if sha256 == self._refused_sha256:
                    # The file watcher and a SIGHUP both saw one edit: it was refused already.
                    log.info("config unchanged since it was refused; nothing reloaded")
                    return
                text = raw.decode("utf-8-sig")
                config = with_listen(load_config_text(text, str(path)), self.listen)
            except (OSError, UnicodeDecodeError):
                try:
                    load_config(path)  # says what is wrong with the file, as `check` would
                except ConfigError as exc:
                    self._refused(exc, sha256)
                return
            except ConfigError as exc:
                self._refused(exc, sha256)
                return
            self._refused_sha256 = ""
            self._warn_about_restart_settings(config)
            self.config, self.text, self._sha256 = config, text, sha256
            serving = [w for w in self.workers if w.serving and w.channel is not None]
            replies = await asyncio.gather(*(self._ask_reload(w, text) for w in serving))
            failed = [(w, why) for w, why in zip(serving, replies, strict=True) if why]
            for worker, why in zip(serving, replies, strict=True):
                if not why:
                    worker.text = text
            for worker, why in failed:
                log.error("gateway process %d did not reload: %s", worker.slot, why)
            self.stats.reloaded(not failed)
            if len(failed) < len(serving) and self._recorder is not None:
                self._recorder.record(path, self._sha256, config)
            log.info(
                "config reloaded (%d routes) in %d of %d gateway processes",
                len(config.routes),
                len(serving) - len(failed),
                len(serving),
            )

    def _refused(self, error: ConfigError, sha256: str) -> None:
        log.error("config reload refused; every process keeps the previous config:\n%s", error)
        self.stats.reloaded(False)
        self._refused_sha256 = sha256

    def _warn_about_restart_settings(self, config: PorticoConfig) -> None:
        old = self.config
        for name, before, after in (
            ("gateway.listen", old.gateway.listen, config.gateway.listen),
            ("gateway.tls", old.gateway.tls, config.gateway.tls),
            ("gateway.workers", old.gateway.workers, config.gateway.workers),
            ("operations", old.operations, config.operations),
        ):
            if before != after:
                log.warning("%s changed: it takes effect on restart", name)

    async def _catch_up(self, worker: Worker) -> None:
        async with self._reloading:
            text = self.text
            why = await self._ask_reload(worker, text)
            if why:
                log.error("gateway process %d did not reload: %s", worker.slot, why)
            else:
                worker.text = text

    async def _ask_reload(self, worker: Worker, text: str) -> str | None:
        assert worker.channel is not None
        try:
            # Building a snapshot may take a while on a large config: not the scrape's timeout.
            reply = await worker.channel.ask({"ask": "reload", "text": text}, 30.0)
        except (TimeoutError, ChannelClosed) as exc:
            return f"no answer ({type(exc).__name__})"
        return None if reply.get("ok") else str(reply.get("error"))

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            stamp = FileStamp.of(self.config_path)
            if stamp is not None and stamp != self._stamp:
                # Editors write in several steps; give the file a moment to settle.
                await asyncio.sleep(0.2)
                await self._reload()

    # -- what the operations listener asks -----------------------------------------------------

    async def refresh(self) -> None:
        """Pull every serving process's counters and sum them (before a scrape)."""
        await asyncio.gather(*(self._pull(w) for w in self.workers if w.serving))
        tallies = [(w.slot, w.last) for w in self.workers if w.last is not None]
        self.counted = summed(self.departed, tallies)

    async def _poll_counters(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            await self.refresh()

    async def _pull(self, worker: Worker) -> None:
        process, channel = worker.process, worker.channel
        if process is None or channel is None:
            return
        asked = asyncio.get_running_loop().time()
        try:
            reply = await channel.ask({"ask": "stats"}, ASK_TIMEOUT)
        except TimeoutError:
            self._silent(worker, process, asked)
            return
        except ChannelClosed:
            return
        worker.silent_since = None
        # An answer read after the process exited is already in the departed's counters.
        if reply.get("ok") and worker.process is process and process.returncode is None:
            worker.last = reply["tally"]

    def _silent(self, worker: Worker, process: asyncio.subprocess.Process, asked: float) -> None:
        """A serving process did not answer: past ``gateway.worker_timeout`` of silence it is
        killed, and replaced as any process that dies (:meth:`_watch_exit`)."""
        if worker.process is not process or not worker.serving or process.returncode is not None:
            return
        if worker.silent_since is None:
            worker.silent_since = asked
        limit = self.config.gateway.worker_timeout
        silent = asyncio.get_running_loop().time() - worker.silent_since
        if limit <= 0 or silent < limit:
            return
        log.error(
            "gateway process %d (pid %d) has not answered for %.0fs (gateway.worker_timeout): "
            "its event loop is stuck; killed",
            worker.slot,
            process.pid,
            silent,
            extra={"slot": worker.slot, "worker_pid": process.pid},
        )
        worker.silent_since = None
        with contextlib.suppress(ProcessLookupError):
            process.kill()

    async def _ready(self, worker: Worker) -> None:
        if not worker.serving:
            raise RuntimeError(worker.state)
        await self._answers(worker)

    async def _alive(self, worker: Worker) -> None:
        # A slot whose process is being replaced is the supervisor's business, not a reason to
        # restart the whole set; a process that serves but does not answer is.
        if worker.serving:
            await self._answers(worker)

    async def _answers(self, worker: Worker) -> None:
        assert worker.channel is not None
        try:
            reply = await worker.channel.ask({"ask": "ready"}, ASK_TIMEOUT)
        except TimeoutError:
            raise RuntimeError(f"no answer within {ASK_TIMEOUT:g}s") from None
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error")))

    # -- stopping ------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """SIGTERM every process; wait for them (their drain, and a grace); kill what is left."""
        self.stopping = True
        alive = [
            w.process
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        ]
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if self._listeners is not None:
            # The processes hold their own copies; the port closes when the last one exits.
            self._listeners.close()
        limit = self.config.gateway.drain_timeout + KILL_GRACE
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(p.wait() for p in alive))
        except TimeoutError:
            for process in alive:
                if process.returncode is None:
                    log.error("gateway process (pid %d) did not stop: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in alive))

    def _spawn_task(self, coroutine: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
