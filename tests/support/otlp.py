"""A real OTLP/HTTP trace receiver for tests, on a 127.0.0.1 ephemeral port.

It takes what a collector takes: ``POST /v1/traces`` with an ``application/x-protobuf``
``ExportTraceServiceRequest``, decoded with the official ``opentelemetry-proto`` classes, and
answers an ``ExportTraceServiceResponse``. What it received is kept as :class:`ReceivedSpan`
values (ids in hex, attributes as plain values, the resource's attributes with each span).

:attr:`Collector.mode` makes it misbehave: ``"stall"`` holds every export until
:meth:`Collector.release` (a collector that stopped reading), ``"fail"`` answers 400 (a
permanent refusal, not retried by the exporter).
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

Mode = Literal["ok", "stall", "fail"]

SERVER = Span.SpanKind.SPAN_KIND_SERVER
CLIENT = Span.SpanKind.SPAN_KIND_CLIENT
STATUS_ERROR = Status.StatusCode.STATUS_CODE_ERROR
STATUS_UNSET = Status.StatusCode.STATUS_CODE_UNSET


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    attributes: dict[str, Any]
    status: int
    status_message: str
    start_ns: int
    end_ns: int
    resource: dict[str, Any]
    scope: str

    @property
    def traceparent_of_child(self) -> str:
        """The ``traceparent`` a request made under this span carries (sampled)."""
        return f"00-{self.trace_id}-{self.span_id}-01"


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return None


def _attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = _value(pair.value)
    return out


class Collector:
    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.requests = 0
        """Export requests received (whatever became of them)."""
        self.content_types: list[str] = []
        self.headers: list[dict[str, str]] = []
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                collector.receive(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-collector", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL, as ``tracing.endpoint`` takes it (``/v1/traces`` is appended)."""
        return f"http://127.0.0.1:{self.port}"

    def receive(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests += 1
            self.content_types.append(handler.headers.get("content-type", ""))
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        if self.mode == "stall":
            self._released.wait(30)
        if handler.path != "/v1/traces":
            self._answer(handler, 404, b"")
            return
        if self.mode == "fail":
            self._answer(handler, 400, b"")
            return
        if handler.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                            status=span.status.code,
                            status_message=span.status.message,
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            resource=resource,
                            scope=scope_spans.scope.name,
                        )
                    )
        with self._lock:
            self._spans.extend(received)
        self._answer(handler, 200, ExportTraceServiceResponse().SerializeToString())

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", "application/x-protobuf")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in self.spans() if span.trace_id == trace_id]

    def wait_for_trace(
        self, trace_id: str, count: int, timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.trace(trace_id)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} spans of trace {trace_id} arrived: {found}"
                )
            time.sleep(0.05)

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
