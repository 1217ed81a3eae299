"""One gateway process of ``portico serve --workers N``, started by the supervisor.

It serves the listening sockets the supervisor bound (inherited descriptors), with the same
live parts as ``portico serve`` (:class:`portico.serving.ServedGateway`), and answers the
supervisor on its control channel:

- ``start`` (event, first message): the config text the supervisor checked; the process builds
  its snapshot from it, starts serving and says ``started`` (or ``failed``, with the reason);
- ``stats``: its counters and its view of the targets (:func:`~portico.supervisor.counters.tally`);
- ``ready``: an answer at all says the event loop serves;
- ``reload``: a config text the supervisor checked, to serve from now on.

It does not watch the config file, record config revisions or answer SIGHUP: the supervisor
does, once for all. SIGINT and SIGTERM drain it (within ``gateway.drain_timeout``), and so does
the end of the channel: a process never outlives its supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import uvloop

from portico import _native
from portico.assembly import load_config_text
from portico.config.errors import ConfigError
from portico.gateway.app import BoundListeners
from portico.operations.metrics import target_views
from portico.serving import ServedGateway, latest_state, with_listen
from portico.store.secrets import open_secrets
from portico.supervisor.channel import Channel, Message
from portico.supervisor.counters import tally

__all__ = ["WorkerSpec", "serve_as_worker"]

log = logging.getLogger("portico.supervisor")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor hands a gateway process on its command line."""

    slot: int
    """1 to N: the place this process fills (its replacement fills the same)."""
    config_path: str
    listen: tuple[str, int] | None
    """``serve --listen``, kept across reloads as ``serve`` does."""
    control_fd: int
    plain_fd: int
    tls_fd: int | None

    def to_argv(self) -> list[str]:
        listen = "" if self.listen is None else f"{self.listen[0]}|{self.listen[1]}"
        tls = "" if self.tls_fd is None else str(self.tls_fd)
        return [
            str(self.slot),
            self.config_path,
            listen,
            str(self.control_fd),
            str(self.plain_fd),
            tls,
        ]

    @classmethod
    def from_argv(cls, argv: list[str]) -> WorkerSpec:
        slot, config_path, listen, control, plain, tls = argv
        host, _, port = listen.rpartition("|")
        return cls(
            slot=int(slot),
            config_path=config_path,
            listen=(host, int(port)) if listen else None,
            control_fd=int(control),
            plain_fd=int(plain),
            tls_fd=int(tls) if tls else None,
        )


def serve_as_worker(spec: WorkerSpec, explain: Callable[[BaseException], str]) -> int:
    """Serve until told to stop; ``explain`` turns a failure to start into the one line the
    supervisor prints."""
    return uvloop.run(_serve(spec, explain))


async def _serve(spec: WorkerSpec, explain: Callable[[BaseException], str]) -> int:
    channel = await Channel.open(socket.socket(fileno=spec.control_fd))
    process = _Process(spec, channel)
    reading = asyncio.get_running_loop().create_task(channel.run(process.on_event, process.on_ask))
    # The supervisor gone (the channel closed) stops this process as SIGTERM does.
    reading.add_done_callback(lambda _: process.channel_closed())
    try:
        text = await process.config_text()
        await process.start(text)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
            raise
        log.debug("gateway process %d could not start", spec.slot, exc_info=True)
        with contextlib.suppress(ConnectionError):
            await channel.send({"event": "failed", "message": explain(exc)})
        channel.close()
        return 1
    await channel.send({"event": "started", "pid": os.getpid()})
    await process.stopped.wait()
    log.info("shutting down: draining in-flight requests")
    await process.close()
    channel.close()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    return 0


class _Process:
    def __init__(self, spec: WorkerSpec, channel: Channel) -> None:
        self._spec = spec
        self._channel = channel
        self._text: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._served: ServedGateway | None = None
        self.stopped = asyncio.Event()

    async def config_text(self) -> str:
        return await self._text

    def channel_closed(self) -> None:
        if not self._text.done():
            self._text.set_exception(ConnectionError("the supervisor closed the channel"))
        self.stopped.set()

    async def start(self, text: str) -> None:
        spec = self._spec
        log.info("gateway code: %s", _native.status())
        path = Path(spec.config_path)
        config = load_config_text(text, spec.config_path)
        entities = None
        if config.entities.source == "store":
            # The store's state revision (the supervisor seeded it), followed from now on.
            entities = latest_state(config, path)
            config = load_config_text(text, spec.config_path, entities=entities.stored())
        config = with_listen(config, spec.listen)
        # The keys the supervisor checked: the environment it handed down, or the key file.
        secrets = open_secrets(config.database.url, config.database.secrets_key_file)
        served = ServedGateway(
            config,
            path,
            spec.listen,
            secrets,
            watch_config=False,
            entities=entities,
            file_text=text,
        )
        bound = BoundListeners(
            plain=socket.socket(fileno=spec.plain_fd),
            tls=None if spec.tls_fd is None else socket.socket(fileno=spec.tls_fd),
        )
        await served.gateway.start(bound)
        self._served = served
        served.keep_current()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopped.set)
        # A terminal's hang-up reaches every process of the group: the supervisor reloads.
        loop.add_signal_handler(signal.SIGHUP, lambda: None)

    async def close(self) -> None:
        if self._served is not None:
            await self._served.close()

    def on_event(self, message: Message) -> None:
        if message.get("event") == "start" and not self._text.done():
            self._text.set_result(str(message["text"]))

    async def on_ask(self, message: Message) -> Message:
        served = self._served
        if served is None:
            return {"ok": False, "error": "starting"}
        ask = message.get("ask")
        if ask == "stats":
            gateway = served.gateway
            return {"ok": True, "tally": tally(gateway.stats, target_views(gateway))}
        if ask == "ready":
            return {"ok": True}
        if ask == "reload":
            return self._reload(str(message["text"]))
        return {"ok": False, "error": f"unknown question {ask!r}"}

    def _reload(self, text: str) -> Message:
        served = self._served
        assert served is not None
        try:
            served.use_text(text)
        except ConfigError as exc:
            log.error("config reload refused; the previous config keeps serving:\n%s", exc)
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("config reload failed; the previous config keeps serving")
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True}
