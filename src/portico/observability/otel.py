"""The OpenTelemetry SDK behind :class:`~portico.observability.tracing.Tracing`: imported only
when ``tracing.enabled`` is on.

The SDK's parts do what they are made for: ``TracerProvider`` holds the sampler (the config's
parent-based ratio, or ``OTEL_TRACES_SAMPLER``), the resource (``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_SERVICE_NAME``) and the id generator; ``BatchSpanProcessor`` queues finished spans and
exports them from its own thread; ``OTLPSpanExporter`` sends them as OTLP/HTTP protobuf.

What Portico does not use is the SDK's per-span object: a request's spans are recorded when they
end, as the SDK's ``ReadableSpan`` handed to the batch processor, with attributes Portico builds
itself (strings and integers it knows to be valid). Going through ``Tracer.start_span`` costs
about 64 µs per exchange of two spans on the machine of ``docs/benchmarks.md``, most of it
checking each attribute again; recording them costs about 10 µs (``bench/tracing.py`` measures
both). The spans the collector receives are the same.

Two things are added around the SDK's parts: the spans dropped because the queue is full are
counted (the SDK only logs a warning per span), and an export that fails is said once a minute
at most, with the reason the exporter gave (the exporter logs each failed batch and each retry).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from portico.config.tracing import TracingSettings
from portico.core.errors import PorticoError
from portico.observability.tracing import (
    ERROR_TYPE,
    HTTP_RESPONSE_STATUS_CODE,
    SPAN_OUTCOMES,
    Attributes,
    SpanCounter,
)

__all__ = ["OtlpTracing", "TracingUnavailable"]

log = logging.getLogger("portico.tracing")

FAILURE_LOG_INTERVAL = 60.0
"""Seconds between two lines about failed exports (the first failure is said at once)."""
MAX_TRACEPARENT = 512
"""Longer ``traceparent`` values are ignored before the propagator sees them (it would log a
warning for each: a client could fill the log)."""
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_PROPAGATOR = TraceContextTextMapPropagator()
_DEFAULT_ENDPOINT = "http://localhost:4318"


class TracingUnavailable(PorticoError):
    """The tracing section asks for something the SDK refuses."""


class OtlpTracing:
    """:class:`~portico.observability.tracing.Tracing` with the OpenTelemetry SDK, exporting
    over OTLP/HTTP."""

    def __init__(self, settings: TracingSettings, count: SpanCounter) -> None:
        for outcome in SPAN_OUTCOMES:
            count(outcome, 0)  # every outcome shows from the start, at 0
        sampler = (
            ParentBased(TraceIdRatioBased(settings.sample_ratio))
            if settings.sample_ratio is not None
            else None
        )
        provider = TracerProvider(
            sampler=sampler, resource=_resource(settings), shutdown_on_exit=False
        )
        self._provider = provider
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._scope = InstrumentationScope("portico", _version())
        endpoint = settings.endpoint.rstrip("/") + "/v1/traces" if settings.endpoint else None
        self.where = _for_logs(endpoint or _endpoint_from_environment())
        """The collector's traces URL, as the log names it (without userinfo)."""
        exporter = OTLPSpanExporter(
            endpoint=endpoint,
            headers=dict(settings.headers) or None,
            timeout=settings.timeout,
            compression=Compression(settings.compression) if settings.compression else None,
        )
        self._export = ReportedExport(exporter, count, self.where)
        batch = settings.batch
        batch_size = batch.max_export_batch_size
        if batch_size is None and batch.max_queue_size is not None:
            batch_size = min(batch.max_queue_size, 512)
        try:
            self._queue = CountedQueue(
                self._export,
                count,
                max_queue_size=batch.max_queue_size,
                schedule_delay_millis=(
                    batch.schedule_delay * 1000 if batch.schedule_delay is not None else None
                ),
                max_export_batch_size=batch_size,
            )
        except ValueError as exc:  # the OTEL_BSP_* variables against the config's values
            raise TracingUnavailable(f"tracing.batch: {exc}") from exc
        provider.add_span_processor(self._queue)
        self._shutdown_timeout = settings.shutdown_timeout
        log.info("tracing: spans go to %s (OTLP/HTTP)", self.where)

    def exchange(
        self, name: str, traceparent: str | None, trace_id: str, start_ns: int
    ) -> _Exchange | _Unsampled:
        parent: SpanContext | None = None
        context: Context | None = None
        if traceparent and len(traceparent) <= MAX_TRACEPARENT:
            context = _PROPAGATOR.extract({"traceparent": traceparent})
            found = trace_api.get_current_span(context).get_span_context()
            if found.is_valid:
                parent = found
            else:
                context = None
        if parent is not None:
            tid = parent.trace_id
        elif trace_id:
            tid = int(trace_id, 16)
        else:
            tid = self._ids.generate_trace_id()
        result = self._sampler.should_sample(context, tid, name, SpanKind.SERVER)
        prefix = f"00-{tid:032x}-"
        if result.decision is not Decision.RECORD_AND_SAMPLE:
            return _Unsampled(self, prefix)
        span = SpanContext(tid, self._ids.generate_span_id(), False, _SAMPLED, result.trace_state)
        return _Exchange(self, name, span, parent, start_ns, prefix)

    def span_id(self) -> int:
        return self._ids.generate_span_id()

    def record(
        self,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: Attributes,
        error: str,
        description: str,
        start_ns: int,
    ) -> None:
        """Hand a finished span to the batch processor (never blocks: the queue is bounded)."""
        status = _UNSET
        if error:
            attributes[ERROR_TYPE] = error
            status = Status(StatusCode.ERROR, description or None)
        span = ReadableSpan(
            name=name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=time.time_ns(),
            instrumentation_scope=self._scope,
        )
        self._queue.on_end(span)

    def shutdown(self) -> None:
        """Export what is queued within ``tracing.shutdown_timeout``, then give up the rest.

        The SDK's own shutdown waits up to 30 s for its thread, which may be retrying a
        collector that does not answer: it runs in a thread of its own, and past the timeout
        the exporter is shut, which ends its retries at once."""
        done = threading.Event()

        def flush() -> None:
            try:
                self._queue.shutdown()  # type: ignore[no-untyped-call]
            finally:
                done.set()

        threading.Thread(target=flush, name="portico-tracing-shutdown", daemon=True).start()
        if not done.wait(self._shutdown_timeout):
            log.warning(
                "tracing: the spans still queued were not exported to %s within %gs of "
                "shutdown (tracing.shutdown_timeout)",
                self.where,
                self._shutdown_timeout,
            )
            self._export.shutdown()
            done.wait(1.0)


class _Exchange:
    """A sampled SERVER span, recorded when it ends."""

    __slots__ = ("_context", "_name", "_parent", "_prefix", "_start", "_tracing")

    recording = True

    def __init__(
        self,
        tracing: OtlpTracing,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        start_ns: int,
        prefix: str,
    ) -> None:
        self._tracing = tracing
        self._name = name
        self._context = context
        self._parent = parent
        self._start = start_ns
        self._prefix = prefix

    def upstream(self, name: str, attributes: Attributes) -> _Upstream:
        tracing = self._tracing
        own = self._context
        span_id = tracing.span_id()
        context = SpanContext(own.trace_id, span_id, False, _SAMPLED, own.trace_state)
        traceparent = f"{self._prefix}{span_id:016x}-01"
        return _Upstream(tracing, name, context, own, attributes, traceparent)

    def end(self, attributes: Attributes, error: str, description: str) -> None:
        self._tracing.record(
            self._name,
            SpanKind.SERVER,
            self._context,
            self._parent,
            attributes,
            error,
            description,
            self._start,
        )


class _Upstream:
    """A sampled CLIENT span: one upstream attempt."""

    __slots__ = (
        "_attributes",
        "_context",
        "_name",
        "_parent",
        "_start",
        "_status",
        "_tracing",
        "traceparent",
    )

    def __init__(
        self,
        tracing: OtlpTracing,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        attributes: Attributes,
        traceparent: str,
    ) -> None:
        self._tracing = tracing
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._start = time.time_ns()
        self._status = 0
        self.traceparent = traceparent

    def respond(self, status: int) -> None:
        self._status = status

    def end(self, error: str) -> None:
        attributes = self._attributes
        status = self._status
        if status:
            attributes[HTTP_RESPONSE_STATUS_CODE] = status
            if not error and status >= 400:
                error = str(status)  # a client span fails on 4xx and 5xx (HTTP conventions)
        self._tracing.record(
            self._name,
            SpanKind.CLIENT,
            self._context,
            self._parent,
            attributes,
            error,
            "",
            self._start,
        )


class _Unsampled:
    """A request whose trace is not sampled: nothing is recorded, and the upstream is told so
    (flags ``00``) with a span id of its own, so that the trace goes on unbroken."""

    __slots__ = ("_prefix", "_tracing")

    recording = False

    def __init__(self, tracing: OtlpTracing, prefix: str) -> None:
        self._tracing = tracing
        self._prefix = prefix

    def upstream(self, name: str, attributes: Attributes) -> _Propagated:
        return _Propagated(f"{self._prefix}{self._tracing.span_id():016x}-00")

    def end(self, attributes: Attributes, error: str, description: str) -> None:
        return None


class _Propagated:
    __slots__ = ("traceparent",)

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent

    def respond(self, status: int) -> None:
        return None

    def end(self, error: str) -> None:
        return None


class CountedQueue(BatchSpanProcessor):
    """The SDK's batch processor, with the spans it drops counted.

    The SDK drops a span when its queue is full with a warning logged for each (the log would
    grow with the overload it reports); here the span is counted and not offered."""

    def __init__(
        self,
        exporter: SpanExporter,
        count: SpanCounter,
        *,
        max_queue_size: int | None,
        schedule_delay_millis: float | None,
        max_export_batch_size: int | None,
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=max_export_batch_size,
        )
        # The SDK's queue (a bounded deque) is not public; the version is locked, and
        # tests/observability/test_tracing.py checks the count against a collector that stalls.
        processor = self._batch_processor
        self._pending = processor._queue
        self._capacity = processor._max_queue_size
        self._count = count

    def on_end(self, span: ReadableSpan) -> None:
        if len(self._pending) >= self._capacity:
            self._count("dropped", 1)
            return
        super().on_end(span)


class ReportedExport(SpanExporter):
    """The OTLP exporter, with what it exported counted and its failures said once a minute
    at most, with the first reason the exporter gave (its own lines are held back)."""

    def __init__(self, exporter: SpanExporter, count: SpanCounter, where: str) -> None:
        self._exporter = exporter
        self._count = count
        self._where = where
        self._lost = 0
        """Spans lost since the last line about them."""
        self._said_at = -FAILURE_LOG_INTERVAL
        self._failing = False
        self._reason = _REASON

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._reason.reset()
        try:
            result = self._exporter.export(spans)
        except Exception as exc:  # the exporter's own failure must not end the export thread
            self._reason.first = f"{type(exc).__name__}: {exc}"
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._count("exported", len(spans))
            if self._failing:
                self._failing = False
                log.warning(
                    "tracing: spans reach %s again (%d lost before)", self._where, self._lost
                )
                self._lost = 0
            return result
        self._count("failed", len(spans))
        self._failing = True
        self._lost += len(spans)
        now = time.monotonic()
        if now - self._said_at >= FAILURE_LOG_INTERVAL:
            log.warning(
                "tracing: could not export spans to %s: %s (%d spans lost since the last "
                "such line; said once a minute at most)",
                self._where,
                self._reason.first or "no reason given",
                self._lost,
            )
            self._said_at = now
            self._lost = 0
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class _FirstReason(logging.Filter):
    """Holds back the exporter's log records, keeping the first message of each export."""

    def __init__(self) -> None:
        super().__init__()
        self.first = ""

    def reset(self) -> None:
        self.first = ""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and not self.first:
            self.first = record.getMessage()
        return False


_REASON = _FirstReason()
"""One for the process: the exporter's loggers are the process's (two tracings live side by
side only for the moment a reload replaces one)."""
for _name in _EXPORTER_LOGGERS:
    logging.getLogger(_name).addFilter(_REASON)


def _resource(settings: TracingSettings) -> Resource:
    attributes: dict[str, str | int] = dict(settings.resource)
    attributes["service.version"] = _version()
    attributes["process.pid"] = os.getpid()
    if settings.service_name is not None:
        attributes["service.name"] = settings.service_name
    resource = Resource.create(attributes)
    name = resource.attributes.get("service.name")
    if not isinstance(name, str) or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "portico"}))
    return resource


def _version() -> str:
    try:
        return importlib.metadata.version("portico")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _endpoint_from_environment() -> str:
    """Where the exporter sends when the config names no endpoint (its own rules)."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _DEFAULT_ENDPOINT
    return base.rstrip("/") + "/v1/traces"


def _for_logs(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
