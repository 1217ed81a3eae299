"""Whether an upstream target may receive traffic: circuit breaker, passive and active checks.

Every target has one :class:`TargetHealth`. Three signals decide if the balancer may pick it:

- the **active check** (a periodic HTTP probe) marks it up or down after N successes or failures;
- the **passive check** counts consecutive failures of real requests and takes the target out of
  rotation for ``recovery_after`` seconds when the threshold is reached;
- the **circuit breaker** opens after consecutive failures, so calls fail fast; after
  ``reset_timeout`` it lets one trial request through (half-open) and closes again if it succeeds.

Each change for the worse is logged once, when it happens, naming the service, the target and the
last failure (``service 'orders' target http://10.0.0.5:8080: circuit opened after 5 consecutive
failures (last: connection refused)``), with ``service`` and ``target`` also as the record's
fields. Successes log nothing but a target's return, so the hot path stays quiet.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

from portico.config import model

# A child of ``portico.gateway``: one logger name to follow (or silence) for the data plane.
log = logging.getLogger("portico.gateway.health")


def describe_os_error(exc: OSError) -> str:
    """A socket error as a short phrase (``connection refused``, ``name or service not known``):
    the operating system's message without the errno and address noise of ``str(exc)``."""
    if exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text if text else type(exc).__name__


_TLS_REASONS = {
    # Alerts a target sends while it judges our client certificate. Portico's client contexts
    # never offer post-handshake authentication, so they come from the handshake only (with
    # TLS 1.3, after Portico's side of it is done and the request written).
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the target requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the target refused the handshake (a client certificate it requires, or no cipher in "
        "common)"
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": "the target refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the target refused our client certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the target refused our client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the target does not trust the issuer of our client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the target says our client certificate has expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the target says our client certificate is revoked",
    "TLSV1_ALERT_DECRYPT_ERROR": "the target could not verify our certificate's signature",
    # The rest of the handshake.
    "WRONG_VERSION_NUMBER": "the target does not answer in TLS (is it an http:// port?)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (see tls.min_version)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (see tls.min_version)",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "the target does not speak HTTP/1.1 (ALPN)",
}
"""OpenSSL's reasons for a failed handshake, in the words of the log."""


def describe_tls_error(exc: ssl.SSLError) -> str:
    """A failed TLS handshake as a phrase for the log: why the certificate did not verify (the
    hostname it is not valid for, the issuer that is not trusted), or what the target refused."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the target's certificate did not verify: {exc.verify_message}"
    reason = exc.reason or ""
    meaning = _TLS_REASONS.get(reason)
    if meaning is not None:
        return f"TLS: {meaning}"
    detail = reason.lower().replace("_", " ") if reason else type(exc).__name__
    return f"TLS handshake failed ({detail})"


def counted(n: int, noun: str) -> str:
    """``1 failure``, ``3 failures``: log lines read as sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


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

    @property
    def failures(self) -> int:
        """Consecutive failures counted since the last success."""
        return self._failures

    def failure(self) -> bool:
        """A request failed; whether this failure opened the circuit (for its owner to log: the
        breaker does not know which target it guards)."""
        self._trial_in_flight = False
        if self.state is CircuitState.HALF_OPEN:
            return self._open()
        self._failures += 1
        if self._failures >= self.settings.failure_threshold:
            return self._open()
        return False

    def _open(self) -> bool:
        opened = self.state is not CircuitState.OPEN
        self.state = CircuitState.OPEN
        self._opened_at = self._clock()
        return opened


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
        "fields",
        "passive",
        "prefix",
    )

    def __init__(
        self,
        service: str,
        target: str,
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
        # Built once: every log line about this target starts with them.
        self.prefix = f"service {service!r} target {target}"
        """How a log line names this target: ``service 'orders' target http://10.0.0.5:8080``."""
        self.fields: dict[str, object] = {"service": service, "target": target}
        """The same as the record's fields (``extra=``), for a program reading the log."""

    def available(self) -> bool:
        if not self.actively_healthy:
            return False
        if self._passive_until and self._clock() < self._passive_until:
            return False
        return self.breaker is None or self.breaker.allows()

    def unavailable_because(self) -> str:
        """Why :meth:`available` is false, for the log line of a 503 (failure path only)."""
        if not self.actively_healthy:
            return "failing its health probes"
        if self._passive_until and self._clock() < self._passive_until:
            return "out of rotation after failed requests"
        if self.breaker is not None and not self.breaker.allows():
            if self.breaker.state is CircuitState.HALF_OPEN:
                return "circuit half-open, its trial request in flight"
            return "circuit open"
        return "available"

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

    def failure(self, reason: str) -> None:
        """A request to this target failed; ``reason`` says how (``connection refused``,
        ``status 503``) and is logged only if the failure changes the target's state."""
        breaker = self.breaker
        if breaker is not None:
            half_open = breaker.state is CircuitState.HALF_OPEN
            if breaker.failure():
                if half_open:
                    log.warning(
                        "%s: circuit opened again: the trial request failed (%s)",
                        self.prefix,
                        reason,
                        extra=self.fields,
                    )
                else:
                    log.warning(
                        "%s: circuit opened after %s (last: %s)",
                        self.prefix,
                        counted(breaker.failures, "consecutive failure"),
                        reason,
                        extra=self.fields,
                    )
        passive = self.passive
        if passive is not None:
            self._passive_failures += 1
            if self._passive_failures >= passive.unhealthy_threshold:
                log.warning(
                    "%s: out of rotation for %gs after %s (last: %s)",
                    self.prefix,
                    passive.recovery_after,
                    counted(self._passive_failures, "consecutive failure"),
                    reason,
                    extra=self.fields,
                )
                self._passive_failures = 0
                self._passive_until = self._clock() + passive.recovery_after

    def fails_on_status(self, status: int) -> bool:
        return self.passive is not None and status in self.passive.failure_statuses

    def probe_result(self, ok: bool, reason: str = "") -> None:
        """The outcome of one active probe; ``reason`` says why a failed one failed."""
        active = self.active
        assert active is not None
        if ok:
            self._active_failures = 0
            self._active_successes += 1
            if not self.actively_healthy and self._active_successes >= active.healthy_threshold:
                self.actively_healthy = True
                log.info(
                    "%s: healthy again after %s",
                    self.prefix,
                    counted(self._active_successes, "successful health probe"),
                    extra=self.fields,
                )
        else:
            self._active_successes = 0
            self._active_failures += 1
            if self.actively_healthy and self._active_failures >= active.unhealthy_threshold:
                self.actively_healthy = False
                log.warning(
                    "%s: out of rotation after %s of %s (last: %s)",
                    self.prefix,
                    counted(self._active_failures, "failed health probe"),
                    active.path,
                    reason,
                    extra=self.fields,
                )


class _ProbeResponse:
    """httptools callback sink that only wants the status code."""

    def __init__(self) -> None:
        self.done = False

    def on_headers_complete(self) -> None:
        self.done = True


async def probe(
    url: str,
    path: str,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
    server_name: str | None,
) -> tuple[int, str]:
    """GET ``path`` on the target: its status code, or 0 and why it could not be reached.

    An ``https://`` target is probed with ``ssl_context`` and ``server_name``, the TLS settings
    of the requests it serves (its :class:`~portico.gateway.upstream.Target`'s), so that a probe
    never passes where a request would fail; ``None`` for an ``http://`` target.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_name if ssl_context is not None else None,
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
                    return 0, "the connection closed before a response"
                parser.feed_data(data)
            return int(parser.get_status_code()), ""
    except TimeoutError:
        # Before OSError: TimeoutError and SSLError are among its subclasses.
        return 0, f"no response within {timeout:g}s"
    except ssl.SSLError as tls_error:
        return 0, describe_tls_error(tls_error)
    except OSError as os_error:
        return 0, describe_os_error(os_error)
    except httptools.HttpParserError:
        return 0, "the response is not HTTP"
    finally:
        if writer is not None:
            writer.close()


async def run_active_checks(
    url: str,
    health: TargetHealth,
    ssl_context: ssl.SSLContext | None,
    server_name: str | None,
) -> None:
    """Probe one target for ever (cancelled when its service leaves the runtime)."""
    settings = health.active
    assert settings is not None
    while True:
        status, reason = await probe(url, settings.path, settings.timeout, ssl_context, server_name)
        ok = status in settings.expected_statuses
        if status and not ok:
            reason = f"status {status}"
        health.probe_result(ok, reason)
        await asyncio.sleep(settings.interval)
