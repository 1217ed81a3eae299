"""A tiny OTLP/HTTP trace receiver that prints one line per span: to see Portico's spans
without a collector (docs/tracing.md). For trying things out, not for production.

    .venv/bin/python examples/tracing/otlp_receiver.py --port 4318

It takes ``POST /v1/traces`` with an ``application/x-protobuf`` ``ExportTraceServiceRequest``
(what ``tracing.endpoint: http://127.0.0.1:4318`` sends), decodes it with the official
``opentelemetry-proto`` classes (installed with Portico) and prints, for each span:

    TRACE_ID SPAN_ID parent=PARENT_SPAN_ID|- KIND "NAME" status=OK|ERROR[:message] key=value ...
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

KINDS = {Span.SpanKind.SPAN_KIND_SERVER: "SERVER", Span.SpanKind.SPAN_KIND_CLIENT: "CLIENT"}


def value_of(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which else None


def describe(span: Span) -> str:
    parent = span.parent_span_id.hex() or "-"
    kind = KINDS.get(span.kind, "INTERNAL")
    status = "ERROR" if span.status.code == Status.StatusCode.STATUS_CODE_ERROR else "OK"
    if span.status.message:
        status += ":" + span.status.message
    pairs = sorted(span.attributes, key=lambda pair: pair.key)
    attributes = " ".join(f"{pair.key}={value_of(pair.value)}" for pair in pairs)
    return (
        f"{span.trace_id.hex()} {span.span_id.hex()} parent={parent} {kind} "
        f'"{span.name}" status={status} {attributes}'
    )


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path != "/v1/traces":
            self.answer(404, b"")
            return
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    print(describe(span), flush=True)
        self.answer(200, ExportTraceServiceResponse().SerializeToString())

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Receiver)
    print(f"receiving OTLP/HTTP traces on http://{args.host}:{args.port}/v1/traces", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
