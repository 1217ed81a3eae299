"""Whether an upstream target may receive traffic: circuit breaker, passive and active checks.

Every target has one :class:`TargetHealth`. Three signals decide if the balancer may pick it:

- the **active check** (a periodic HTTP probe) marks it up or down after N successes or failures;
- the **passive check** counts consecutive failures of real requests and takes the target out of
  rotation for ``recovery_after`` seconds when the threshold is reached;
- the **circuit breaker** opens after consecutive failures, so calls fail fast; after
  ``reset_timeout`` it lets one trial request through (half-open) and closes again if it succeeds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

from portico.config import model

log = logging.getLogger("portico.health")


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_clock", "_failures", "_opened_at", "_trial_in_flight", "settings", "state")

    def __init__(
        self, settings: model.CircuitBreaker, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._clock = clock

    def allows(self) -> bool:
        """May a request be sent now? Does not reserve the half-open trial (see :meth:`begin`)."""
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            return self._clock() - self._opened_at >= self.settings.reset_timeout
        return not self._trial_in_flight

    def begin(self) -> None:
        """A request is being sent to this target."""
        if self.state is CircuitState.OPEN:
            self.state = CircuitState.HALF_OPEN
            self._trial_in_flight = True
        elif self.state is CircuitState.HALF_OPEN:
            self._trial_in_flight = True

    def success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        self.state = CircuitState.CLOSED

    def abandon(self) -> None:
        """The request was cancelled by its client: it proves nothing either way."""
        self._trial_in_flight = False

    def failure(self) -> None:
        self._trial_in_flight = False
        if self.state is CircuitState.HALF_OPEN:
            self._open()
            return
        self._failures += 1
        if self._failures >= self.settings.failure_threshold:
            self._open()

    def _open(self) -> None:
        if self.state is not CircuitState.OPEN:
            log.warning("circuit opened after %d consecutive failures", self._failures or 1)
        self.state = CircuitState.OPEN
        self._opened_at = self._clock()


class TargetHealth:
    __slots__ = (
        "_active_failures",
        "_active_successes",
        "_clock",
        "_passive_failures",
        "_passive_until",
        "active",
        "actively_healthy",
        "breaker",
        "passive",
    )

    def __init__(
        self,
        checks: model.HealthCheck,
        breaker: model.CircuitBreaker | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.active = checks.active
        self.passive = checks.passive
        self.breaker = CircuitBreaker(breaker, clock) if breaker else None
        self.actively_healthy = True
        self._active_successes = 0
        self._active_failures = 0
        self._passive_failures = 0
        self._passive_until = 0.0
        self._clock = clock

    def available(self) -> bool:
        if not self.actively_healthy:
            return False
        if self._passive_until and self._clock() < self._passive_until:
            return False
        return self.breaker is None or self.breaker.allows()

    def begin(self) -> None:
        if self.breaker is not None:
            self.breaker.begin()

    def abandon(self) -> None:
        if self.breaker is not None:
            self.breaker.abandon()

    def success(self) -> None:
        self._passive_failures = 0
        self._passive_until = 0.0
        if self.breaker is not None:
            self.breaker.success()

    def failure(self) -> None:
        if self.breaker is not None:
            self.breaker.failure()
        if self.passive is not None:
            self._passive_failures += 1
            if self._passive_failures >= self.passive.unhealthy_threshold:
                self._passive_failures = 0
                self._passive_until = self._clock() + self.passive.recovery_after

    def fails_on_status(self, status: int) -> bool:
        return self.passive is not None and status in self.passive.failure_statuses

    def probe_result(self, ok: bool) -> None:
        assert self.active is not None
        if ok:
            self._active_failures = 0
            self._active_successes += 1
            if (
                not self.actively_healthy
                and self._active_successes >= self.active.healthy_threshold
            ):
                self.actively_healthy = True
                log.info("target is healthy again")
        else:
            self._active_successes = 0
            self._active_failures += 1
            if self.actively_healthy and self._active_failures >= self.active.unhealthy_threshold:
                self.actively_healthy = False
                log.warning("target failed %d health probes", self._active_failures)


class _ProbeResponse:
    """httptools callback sink that only wants the status code."""

    def __init__(self) -> None:
        self.done = False

    def on_headers_complete(self) -> None:
        self.done = True


async def probe(url: str, path: str, timeout: float) -> int | None:
    """GET ``path`` on the target; the status code, or None when it could not be reached."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=parts.scheme == "https" or None
            )
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: portico-health\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            sink = _ProbeResponse()
            parser = httptools.HttpResponseParser(sink)
            while not sink.done:
                data = await reader.read(65536)
                if not data:
                    return None
                parser.feed_data(data)
            return int(parser.get_status_code())
    except (OSError, TimeoutError, httptools.HttpParserError):
        return None
    finally:
        if writer is not None:
            writer.close()


async def run_active_checks(url: str, health: TargetHealth) -> None:
    """Probe one target for ever (cancelled when its service leaves the runtime)."""
    settings = health.active
    assert settings is not None
    while True:
        status = await probe(url, settings.path, settings.timeout)
        health.probe_result(status is not None and status in settings.expected_statuses)
        await asyncio.sleep(settings.interval)
