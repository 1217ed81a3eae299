"""Traces: what Portico tells an OpenTelemetry collector about its work (docs/tracing.md).

The gateway reports each exchange as a SERVER span and each upstream attempt as a CLIENT span
below it, through the three protocols here; webhook attempts and flow steps are to report the
same way. :func:`start_tracing` makes the process's :class:`Tracing` from the config's
``tracing`` section, or none when it is off: only then is the OpenTelemetry SDK imported
(:mod:`portico.observability.otel`), so a gateway without tracing never loads it and pays one
``is None`` test per request.

The attribute names are those of OpenTelemetry's semantic conventions for HTTP (stable since
1.23), and ``portico.*`` for what only Portico knows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from portico.config.tracing import TracingSettings

__all__ = [
    "Attributes",
    "ExchangeSpan",
    "SpanCounter",
    "Tracing",
    "UpstreamSpan",
    "start_tracing",
]

log = logging.getLogger("portico.tracing")

Attributes: TypeAlias = dict[str, str | int]

SpanCounter: TypeAlias = Callable[[str, int], None]
"""Told how many spans had which outcome: ``exported``, ``dropped`` (the queue was full),
``failed`` (the collector did not take them); the composition root makes it a metric."""

SPAN_OUTCOMES = ("exported", "dropped", "failed")

# OpenTelemetry semantic conventions (HTTP spans), and Portico's own.
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
HTTP_REQUEST_RESEND_COUNT = "http.request.resend_count"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
USER_AGENT_ORIGINAL = "user_agent.original"
NETWORK_PROTOCOL_VERSION = "network.protocol.version"
ERROR_TYPE = "error.type"
PORTICO_ROUTE = "portico.route"
PORTICO_SERVICE = "portico.service"
PORTICO_CONSUMER = "portico.consumer"
PORTICO_TENANT = "portico.tenant"
PORTICO_REQUEST_ID = "portico.request_id"
PORTICO_PROBLEM_TYPE = "portico.problem.type"
PORTICO_FAILURE = "portico.failure"


class UpstreamSpan(Protocol):
    """A CLIENT span: one attempt to reach a service's target."""

    @property
    def traceparent(self) -> str:
        """The W3C ``traceparent`` the attempt carries upstream: this span's id."""
        ...

    def respond(self, status: int) -> None:
        """The target answered with ``status`` (the span goes on while the body is relayed)."""
        ...

    def end(self, error: str) -> None:
        """The attempt is over; ``error`` is why it failed (``connect``, ``timeout``...), or
        empty."""
        ...


class ExchangeSpan(Protocol):
    """The SERVER span of one request, from its first byte to the end of the exchange."""

    @property
    def recording(self) -> bool:
        """The trace is sampled: this span is recorded. When not, its attributes are not worth
        building, and :meth:`end` ignores them."""
        ...

    def upstream(self, name: str, attributes: Attributes) -> UpstreamSpan:
        """A CLIENT span for an attempt starting now, child of this one."""
        ...

    def end(self, attributes: Attributes, error: str, description: str) -> None:
        """The exchange is over: ``attributes`` are added; a non-empty ``error`` marks the span
        as failed (``error.type``), with ``description`` as its status message."""
        ...


class Tracing(Protocol):
    """The process's tracing: sampling, the bounded queue and the exporter."""

    def exchange(
        self, name: str, traceparent: str | None, trace_id: str, start_ns: int
    ) -> ExchangeSpan:
        """The SERVER span of a request that started at ``start_ns`` (Unix time, in ns): the
        child of the caller's ``traceparent`` when it sent a valid one, else the root of the
        trace ``trace_id`` (32 hex digits: a request id, so that logs and traces share it). The
        sampling decision is taken here, before any attribute is built; the attributes come
        with :meth:`ExchangeSpan.end`."""
        ...

    def shutdown(self) -> None:
        """Export what is queued (within ``tracing.shutdown_timeout``), then stop."""
        ...


def start_tracing(settings: TracingSettings, count: SpanCounter) -> Tracing | None:
    """The process's tracing, or ``None`` when ``tracing.enabled`` is off or
    ``OTEL_SDK_DISABLED`` is ``true``. Each gateway process calls it for itself, after it was
    started: the SDK's export thread is never inherited across a fork."""
    if not settings.enabled:
        return None
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        log.info("tracing: off, OTEL_SDK_DISABLED is true")
        return None
    from portico.observability.otel import OtlpTracing

    return OtlpTracing(settings, count)
