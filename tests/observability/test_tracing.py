"""Traces of a real ``portico serve``, received by a real OTLP/HTTP receiver.

The gateway exports with the official OpenTelemetry SDK exporter; the receiver
(:mod:`tests.support.otlp`) decodes each ``ExportTraceServiceRequest`` with the official
``opentelemetry-proto`` classes. The tests check what a trace backend would show: trace ids,
the parent of each span, the attributes, the status, and that the ``traceparent`` each
upstream received names the span of its attempt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.gateway import Config, PorticoProcess, route, service, wait_for
from tests.support.otlp import (
    CLIENT,
    SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    Collector,
    ReceivedSpan,
)
from tests.support.upstreams import Upstream, echoed_header, refused_url

from portico.identity.apikeys import generate_key

KEY = generate_key()
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@pytest.fixture
def collector() -> Iterator[Collector]:
    receiver = Collector()
    yield receiver
    receiver.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream("orders")
    yield server
    server.release_held()
    server.close()


def tracing(collector: Collector, **settings: Any) -> Config:
    """A ``tracing`` section that exports to ``collector`` without waiting long."""
    section: Config = {
        "enabled": True,
        "endpoint": collector.endpoint,
        "batch": {"schedule_delay": "50ms"},
        "shutdown_timeout": "5s",
    }
    section.update(settings)
    return section


def traced_config(upstream: Upstream, collector: Collector, **settings: Any) -> Config:
    return {
        "services": {
            "orders": service(upstream.url, retries=0),
            "flaky": service(refused_url(), upstream.url, retries=1, balancer="round_robin"),
            "gone": service(refused_url(), retries=0),
        },
        "tenants": {
            "acme": {"consumers": {"shop": {"api_keys": [{"id": KEY.id, "sha256": KEY.sha256}]}}}
        },
        "routes": [
            route("order", "/orders/{id}", "orders"),
            route(
                "private",
                "/private/{rest:path}",
                "orders",
                policies=[{"type": "auth", "methods": ["api_key"]}],
            ),
            route(
                "limited",
                "/limited",
                "orders",
                policies=[
                    {
                        "type": "rate-limit",
                        "limits": [{"name": "hourly", "limit": 1, "window": "1h", "by": ["ip"]}],
                    }
                ],
            ),
            route("flaky", "/flaky/{rest:path}", "flaky", strip_prefix="/flaky"),
            route("gone", "/gone", "gone"),
            route("raw", "/raw/{rest:path}", "orders", strip_prefix="/raw"),
        ],
        "tracing": tracing(collector, **settings),
    }


@pytest.fixture
def portico(tmp_path: Path, upstream: Upstream, collector: Collector) -> Iterator[PorticoProcess]:
    process = PorticoProcess(tmp_path, traced_config(upstream, collector))
    yield process
    process.stop()


def one(spans: list[ReceivedSpan], kind: int) -> ReceivedSpan:
    found = [span for span in spans if span.kind == kind]
    assert len(found) == 1, spans
    return found[0]


def upstream_traceparent(response: httpx.Response) -> tuple[str, str, str]:
    (value,) = echoed_header(response, "traceparent")
    match = TRACEPARENT.match(value)
    assert match is not None, value
    return match.group(1), match.group(2), match.group(3)


def spans_metric(process: PorticoProcess) -> dict[str, float]:
    text = httpx.get(process.operations_url + "/metrics", trust_env=False).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "portico_tracing_spans":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["outcome"]] = sample.value
    return out


def test_an_exchange_is_a_server_span_with_its_upstream_attempt_as_child(
    portico: PorticoProcess, collector: Collector, upstream: Upstream
) -> None:
    with portico.client() as http:
        response = http.get("/orders/42?token=secret", headers={"User-Agent": "tracing-test/1"})
    request_id = response.headers["x-request-id"]

    spans = collector.wait_for_trace(request_id, 2)  # a new trace takes the request id

    server, client = one(spans, SERVER), one(spans, CLIENT)
    assert server.parent_span_id == ""
    assert client.parent_span_id == server.span_id
    # The upstream was told the attempt's span, sampled.
    assert upstream_traceparent(response) == (request_id, client.span_id, "01")
    assert server.name == "GET /orders/{id}"
    assert server.attributes == {
        "http.request.method": "GET",
        "url.path": "/orders/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "server.address": "127.0.0.1",
        "server.port": portico.port,
        "user_agent.original": "tracing-test/1",
        "http.route": "/orders/{id}",
        "http.response.status_code": 200,
        "portico.route": "order",
        "portico.service": "orders",
        "portico.request_id": request_id,
    }
    assert server.status == STATUS_UNSET
    assert client.name == "GET"
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    assert client.attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": upstream_port,
        "url.full": f"http://127.0.0.1:{upstream_port}/orders/42",
        "network.protocol.version": "1.1",
        "http.response.status_code": 200,
    }
    assert client.status == STATUS_UNSET
    assert "secret" not in repr(spans)  # the query string is never recorded
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns
    assert server.resource["service.name"] == "portico"
    assert server.scope == "portico"
    assert collector.content_types[0] == "application/x-protobuf"


def test_the_server_span_continues_the_callers_trace(
    portico: PorticoProcess, collector: Collector
) -> None:
    incoming = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with portico.client() as http:
        response = http.get("/orders/7", headers={"traceparent": incoming})

    spans = collector.wait_for_trace(CALLER_TRACE, 2)

    server, client = one(spans, SERVER), one(spans, CLIENT)
    assert server.parent_span_id == CALLER_SPAN
    assert client.parent_span_id == server.span_id
    assert upstream_traceparent(response) == (CALLER_TRACE, client.span_id, "01")
    assert server.attributes["portico.request_id"] == response.headers["x-request-id"]


def test_retries_are_attempts_of_their_own(portico: PorticoProcess, collector: Collector) -> None:
    """The service's first target refuses connections; the retry reaches the second."""
    with portico.client() as http:
        response = http.get("/flaky/items")
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    spans = collector.wait_for_trace(request_id, 3)

    server = one(spans, SERVER)
    attempts = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start_ns)
    assert [a.parent_span_id for a in attempts] == [server.span_id, server.span_id]
    failed, retried = attempts
    assert failed.attributes["error.type"] == "connect"
    assert failed.status == STATUS_ERROR
    assert "http.response.status_code" not in failed.attributes
    assert "http.request.resend_count" not in failed.attributes
    assert retried.attributes["http.request.resend_count"] == 1
    assert retried.attributes["http.response.status_code"] == 200
    assert retried.status == STATUS_UNSET
    # The upstream saw the second attempt's span, not the first.
    assert upstream_traceparent(response)[1] == retried.span_id
    assert server.status == STATUS_UNSET


def test_refusals_by_policies_are_server_spans_with_their_problem_type(
    portico: PorticoProcess, collector: Collector
) -> None:
    with portico.client() as http:
        unauthorized = http.get("/private/x")
        authorized = http.get("/private/x", headers={"X-API-Key": KEY.key})
        first = http.get("/limited")
        limited = http.get("/limited")
    assert (unauthorized.status_code, first.status_code, limited.status_code) == (401, 200, 429)

    refused = collector.wait_for_trace(unauthorized.headers["x-request-id"], 1)
    let_in = collector.wait_for_trace(authorized.headers["x-request-id"], 2)
    too_many = collector.wait_for_trace(limited.headers["x-request-id"], 1)

    (span,) = refused  # nothing went upstream
    assert span.kind == SERVER
    assert span.status == STATUS_ERROR
    assert span.status_message == "https://portico.dev/problems/unauthorized"
    assert span.attributes["error.type"] == "unauthorized"
    assert span.attributes["portico.problem.type"] == "https://portico.dev/problems/unauthorized"
    assert span.attributes["http.response.status_code"] == 401
    assert span.attributes["portico.route"] == "private"
    assert "portico.consumer" not in span.attributes
    server = one(let_in, SERVER)
    assert server.attributes["portico.consumer"] == "acme/shop"
    assert server.attributes["portico.tenant"] == "acme"
    assert server.status == STATUS_UNSET
    (span,) = too_many
    assert span.attributes["http.response.status_code"] == 429
    assert span.attributes["error.type"] == "rate-limited"
    assert span.status == STATUS_ERROR


def test_a_request_answered_before_routing_is_a_span_too(
    portico: PorticoProcess, collector: Collector
) -> None:
    incoming = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    with portico.client() as http:
        response = http.get("/nowhere", headers={"traceparent": incoming, "User-Agent": "ua"})
    assert response.status_code == 404

    spans = collector.wait_for_trace(CALLER_TRACE, 1)

    (span,) = spans
    assert span.name == "GET"
    assert span.parent_span_id == CALLER_SPAN
    assert span.attributes["error.type"] == "route-not-found"
    assert span.attributes["user_agent.original"] == "ua"
    assert "http.route" not in span.attributes


def test_a_failed_upstream_is_a_502_with_the_attempts_error(
    portico: PorticoProcess, collector: Collector
) -> None:
    with portico.client() as http:
        response = http.get("/gone")
    assert response.status_code == 502

    spans = collector.wait_for_trace(response.headers["x-request-id"], 2)

    server, client = one(spans, SERVER), one(spans, CLIENT)
    assert client.parent_span_id == server.span_id
    assert client.status == STATUS_ERROR
    assert client.attributes["error.type"] == "connect"
    assert server.status == STATUS_ERROR
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "upstream-unavailable"


def test_a_streamed_response_ends_the_server_span_when_the_stream_ends(
    portico: PorticoProcess, collector: Collector
) -> None:
    with portico.client() as http:
        response = http.get("/raw/slow", params={"body": "0.3"})  # the body comes in two parts
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    spans = collector.wait_for_trace(request_id, 2)

    server, client = one(spans, SERVER), one(spans, CLIENT)
    assert client.attributes["http.response.status_code"] == 200
    # The attempt ends with the last byte of the body, and the exchange after it.
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns


def test_sampling_ratio_zero_records_nothing_but_propagates(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    config = traced_config(upstream, collector, sample_ratio=0)
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            fresh = http.get("/orders/1")
            unsampled = http.get(
                "/orders/2", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"}
            )
            # Parent-based: a caller's sampled trace is recorded whatever the ratio.
            sampled = http.get(
                "/orders/3", headers={"traceparent": f"00-{'a' * 32}-{CALLER_SPAN}-01"}
            )
    finally:
        process.stop()  # the shutdown exports what is queued

    trace, span, flags = upstream_traceparent(fresh)
    assert (trace, flags) == (fresh.headers["x-request-id"], "00")
    trace, span, flags = upstream_traceparent(unsampled)
    assert (trace, flags) == (CALLER_TRACE, "00") and span != CALLER_SPAN
    assert upstream_traceparent(sampled)[2] == "01"
    assert {s.trace_id for s in collector.spans()} == {"a" * 32}
    assert len(collector.spans()) == 2


def test_tracing_off_keeps_the_propagation_as_it_was(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    config = traced_config(upstream, collector)
    config["tracing"]["enabled"] = False
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            fresh = http.get("/orders/1")
            continued = http.get(
                "/orders/2", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
            )
        metrics = httpx.get(process.operations_url + "/metrics", trust_env=False).text
    finally:
        process.stop()

    assert upstream_traceparent(fresh)[::2] == (fresh.headers["x-request-id"], "01")
    trace, span, flags = upstream_traceparent(continued)
    assert (trace, flags) == (CALLER_TRACE, "01") and span != CALLER_SPAN
    assert collector.requests == 0
    assert "portico_tracing_spans" not in metrics


def test_an_unreachable_collector_does_not_hurt_serving(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    config = traced_config(upstream, collector, endpoint=refused_url(), timeout="2s")
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            statuses = {http.get(f"/orders/{n}").status_code for n in range(40)}
        assert statuses == {200}
        counted = wait_for(lambda: spans_metric(process).get("failed"), what="failed exports")
        assert counted >= 1
        log = process.log()
    finally:
        process.stop()
    lines = [line for line in log.splitlines() if "could not export spans" in line]
    assert len(lines) == 1, log  # said once, not once per batch or per retry
    assert "Connection refused" in lines[0], lines[0]  # the exporter's reason
    assert "opentelemetry" not in log  # the exporter's own lines are held back


def test_a_full_queue_drops_spans_and_counts_them(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    collector.mode = "stall"  # takes the first batch and never answers
    config = traced_config(
        upstream,
        collector,
        batch={"max_queue_size": 4, "max_export_batch_size": 2, "schedule_delay": "20ms"},
        shutdown_timeout="1s",
    )
    process = PorticoProcess(tmp_path, config)
    try:
        with process.client() as http:
            statuses = {http.get(f"/orders/{n}").status_code for n in range(30)}
        dropped = spans_metric(process).get("dropped", 0)
    finally:
        collector.release()
        process.stop()
    assert statuses == {200}
    # 60 spans: one batch of 2 in the stalled export, 4 in the queue, the rest dropped.
    assert dropped >= 60 - 2 * 2 - 4 * 2


def test_enabling_tracing_takes_effect_on_reload(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    config = traced_config(upstream, collector)
    config["tracing"]["enabled"] = False
    process = PorticoProcess(tmp_path, config)
    try:
        config["tracing"]["enabled"] = True
        process.write(config)
        wait_for(lambda: "tracing restarted" in process.log(), timeout=20, what="the reload")
        with process.client() as http:
            response = http.get("/orders/9")
        spans = collector.wait_for_trace(response.headers["x-request-id"], 2)
    finally:
        process.stop()
    assert one(spans, CLIENT).parent_span_id == one(spans, SERVER).span_id


def test_each_worker_exports_its_own_spans(
    tmp_path: Path, upstream: Upstream, collector: Collector
) -> None:
    config = traced_config(upstream, collector)
    # Rate limits would need Redis with several processes.
    config["routes"] = [r for r in config["routes"] if r["name"] != "limited"]
    process = PorticoProcess(tmp_path, config, ("--workers", "2"))
    try:
        pids: set[int] = set()
        for _ in range(200):  # new connections, until both processes have answered
            with process.client() as http:
                response = http.get("/orders/1")
            spans = collector.wait_for_trace(response.headers["x-request-id"], 2)
            server, client = one(spans, SERVER), one(spans, CLIENT)
            assert client.parent_span_id == server.span_id
            assert upstream_traceparent(response)[1] == client.span_id
            pids.add(server.resource["process.pid"])
            if len(pids) == 2:
                break
        # Summed over both processes by the supervisor (it asks them every second).
        exported = wait_for(lambda: spans_metric(process).get("exported", 0) >= 4)
    finally:
        process.stop()
    assert len(pids) == 2
    assert exported
