"""The operations listener: ``/healthz``, ``/readyz`` and ``/metrics`` on a port of their own.

It runs on the gateway's event loop, off the data plane's port, on ``127.0.0.1`` by default
(``operations.listen``): load balancers and orchestrators ask it whether the process lives and
is ready, Prometheus scrapes it. It speaks plain HTTP/1.1 with keep-alive (httptools parses);
it answers GET and HEAD only, and every error as problem+json.

- ``GET /healthz``: 200 while the process serves (the event loop answers); with liveness
  checks (``serve --workers``: a gateway process answers), 503 when one fails, saying which.
- ``GET /readyz``: 200 when every readiness check passes (the config is loaded, the store answers
  a query within two seconds), else 503; the body says which failed, as JSON.
- ``GET /metrics``: the Prometheus text format (``docs/metrics.md`` lists every metric).
- Reports the composition root adds under a path prefix (``reports``): ``GET /usage/TENANT/NAME``,
  a consumer's rate-limit usage in one gateway process's memory (``portico usage`` without Redis).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote

import httptools
from prometheus_client import CollectorRegistry

from portico.gateway import problems
from portico.gateway.http import new_id, status_line
from portico.operations.metrics import CONTENT_TYPE, exposition

log = logging.getLogger("portico.operations")

CHECK_TIMEOUT = 2.0
MAX_HEAD = 8 * 1024


Report = Callable[[str], Awaitable[tuple[int, str, bytes]]]
"""A report of the listener: the rest of the path -> ``(status, content type, body)``."""


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One condition of ``/readyz``: ``check`` raises (or times out) when it is not met."""

    name: str
    check: Callable[[], Awaitable[None]]
    required: bool = True
    """A failed required check makes ``/readyz`` answer 503; a failed optional one (Redis, whose
    policies each choose to fail open or closed) is reported with status ``degraded`` and 200,
    so that one shared dependency cannot take every gateway out of a load balancer at once."""


class Operations:
    """The listener's routes and state; one per process."""

    def __init__(
        self,
        metrics: CollectorRegistry,
        checks: Sequence[ReadinessCheck],
        liveness: Sequence[ReadinessCheck] = (),
        before_scrape: Callable[[], Awaitable[None]] | None = None,
        reports: Mapping[str, Report] | None = None,
    ) -> None:
        """``before_scrape`` gathers what ``metrics`` reads (``serve --workers``: the counters
        of every gateway process) before each ``/metrics``. ``reports`` answers the paths under
        each prefix (``"/usage/"``), given the rest of the path, percent-decoded."""
        self.reports = dict(reports or {})
        self.metrics = metrics
        self.checks = tuple(checks)
        self.liveness = tuple(liveness)
        self._before_scrape = before_scrape
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        log.info("operations listening on http://%s:%d", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for one request (a problem's id is in its body)."""
        if path == "/healthz":
            if not self.liveness:
                return 200, "text/plain; charset=utf-8", b"ok\n"
            return await self._report(self.liveness, "live", "not live")
        if path == "/readyz":
            return await self._report(self.checks, "ready", "not ready")
        if path == "/metrics":
            if self._before_scrape is not None:
                await self._before_scrape()
            loop = asyncio.get_running_loop()
            # Gathering reads plain memory; only the text is built here, on the loop.
            return 200, CONTENT_TYPE, await loop.run_in_executor(None, exposition, self.metrics)
        for prefix, report in self.reports.items():
            if path.startswith(prefix):
                return await report(unquote(path[len(prefix) :]))
        return _problem(problems.ROUTE_NOT_FOUND)

    async def _report(
        self, checks: Sequence[ReadinessCheck], good: str, bad: str
    ) -> tuple[int, str, bytes]:
        results = await asyncio.gather(*(self._run(check) for check in checks))
        failed = {name: why for name, why in results if why is not None}
        required = {check.name for check in checks if check.required}
        blocking = failed.keys() & required
        body = {
            "status": bad if blocking else "degraded" if failed else good,
            "checks": {name: (why or "ok") for name, why in results},
        }
        status = 503 if blocking else 200
        if failed:
            log.warning("%s: %s", bad, "; ".join(f"{k}: {v}" for k, v in failed.items()))
        return status, "application/json", json.dumps(body).encode() + b"\n"

    @staticmethod
    async def _run(check: ReadinessCheck) -> tuple[str, str | None]:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await check.check()
        except TimeoutError:
            return check.name, f"no answer within {CHECK_TIMEOUT:g}s"
        except Exception as exc:  # a failed check is an answer, not a crash
            return check.name, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return check.name, None


class _Connection(asyncio.Protocol):
    """One client of the operations listener; requests are answered in order."""

    def __init__(self, operations: Operations) -> None:
        self._operations = operations
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._head = 0
        self._queue: asyncio.Queue[tuple[str, str, bool] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self._queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._queue.put_nowait(("", "", False))

    def on_message_begin(self) -> None:
        self._url = b""
        self._head = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head += len(url)
        if self._head > MAX_HEAD:
            raise httptools.HttpParserError("head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4
        if self._head > MAX_HEAD:
            raise httptools.HttpParserError("head too large")

    def on_message_complete(self) -> None:
        method = self._parser.get_method().decode("ascii", "replace")
        path = self._url.partition(b"?")[0].decode("latin-1")
        self._queue.put_nowait((method, path, bool(self._parser.should_keep_alive())))

    async def _serve(self) -> None:
        while True:
            item = await self._queue.get()
            transport = self._transport
            if item is None or transport is None or transport.is_closing():
                return
            method, path, keep_alive = item
            if not method:
                self._write(*_problem(problems.BAD_REQUEST), False, False)
                transport.close()
                return
            if method not in ("GET", "HEAD"):
                status, content_type, body = _problem(problems.METHOD_NOT_ALLOWED)
            else:
                try:
                    status, content_type, body = await self._operations.answer(method, path)
                except Exception:
                    log.exception("operations listener failed to answer %s", path)
                    status, content_type, body = _problem(problems.INTERNAL_ERROR)
            self._write(status, content_type, body, keep_alive, method == "HEAD")
            if not keep_alive:
                transport.close()
                return

    def _write(
        self, status: int, content_type: str, body: bytes, keep_alive: bool, head_only: bool
    ) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        extra = ""
        if content_type == problems.PROBLEM_CONTENT_TYPE:
            extra = f"x-request-id: {json.loads(body)['request_id']}\r\n"
        if status == 405:
            extra += "allow: GET, HEAD\r\n"
        head = (
            f"{status_line(status)}content-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\ncache-control: no-store\r\n"
            + extra
            + ("" if keep_alive else "connection: close\r\n")
            + "\r\n"
        )
        transport.write(head.encode("latin-1") + (b"" if head_only else body))


def _problem(kind: problems.ProblemType) -> tuple[int, str, bytes]:
    reply = problems.problem(kind, new_id())
    return kind.status, problems.PROBLEM_CONTENT_TYPE, reply.body
