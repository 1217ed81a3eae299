"""The operations listener of a real ``portico serve``: health, readiness, and the metrics.

The metrics are read the way operators read them: the text format checked by ``promtool check
metrics`` (Debian's ``prometheus`` package), and a real Prometheus server that scrapes Portico
while traffic flows and answers a ``histogram_quantile`` query through its own HTTP API.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.gateway import (
    PorticoProcess,
    RawConnection,
    check_problem,
    route,
    service,
    wait_for,
)
from tests.support.prometheus import promtool, running_prometheus
from tests.support.upstreams import Upstream, refused_url

from portico.identity.apikeys import generate_key
from portico.operations.listener import Operations, ReadinessCheck
from portico.operations.metrics import CONTENT_TYPE
from portico.serving import RevisionRecorder

KEY = generate_key()


def config(upstream: Upstream) -> dict[str, object]:
    return {
        "services": {
            "orders": service(upstream.url, retries=0),
            "gone": service(refused_url(), retries=1),
        },
        "tenants": {
            "acme": {
                "consumers": {
                    "shop": {
                        "scopes": ["orders:read"],
                        "api_keys": [{"id": KEY.id, "sha256": KEY.sha256}],
                    }
                }
            }
        },
        "routes": [
            route(
                "orders",
                "/orders/{rest:path}",
                "orders",
                policies=[
                    {"type": "auth", "methods": ["api_key"], "scopes": {"all_of": ["orders:read"]}}
                ],
            ),
            route("gone", "/gone/{rest:path}", "gone"),
            route("open", "/open/{rest:path}", "orders", methods=["GET"]),
            route(
                "legacy",
                "/legacy/{rest:path}",
                "orders",
                policies=[
                    {"type": "deprecation", "since": "2026-01-01"},
                    {"type": "auth", "methods": ["api_key"]},
                ],
            ),
            route(
                "masked",
                "/masked/{rest:path}",
                "orders",
                strip_prefix="/masked",
                policies=[{"type": "mask", "remove": ["headers"]}],
            ),
        ],
    }


@pytest.fixture(scope="module")
def portico(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PorticoProcess, Upstream]]:
    upstream = Upstream("orders")
    process = PorticoProcess(tmp_path_factory.mktemp("operations"), config(upstream))
    try:
        yield process, upstream
    finally:
        process.stop()
        upstream.close()


def metrics_of(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by their sorted labels."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def scrape(process: PorticoProcess) -> str:
    response = httpx.get(process.operations_url + "/metrics", trust_env=False, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    return response.text


def test_health_and_readiness_answer_on_their_own_port(
    portico: tuple[PorticoProcess, Upstream],
) -> None:
    process, _ = portico
    assert process.operations_port not in (None, process.port)
    with httpx.Client(base_url=process.operations_url, trust_env=False, timeout=10) as ops:
        assert ops.get("/healthz").status_code == 200
        ready = ops.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"store": "ok"}}
        assert ops.head("/metrics").content == b""
        check_problem(ops.get("/nothing"), 404, "https://portico.dev/problems/route-not-found")
        refused = ops.post("/metrics")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    # The data plane's port does not serve them.
    with process.client() as http:
        assert http.get("/metrics").status_code == 404


def test_requests_latency_auth_failures_and_upstream_errors_are_counted(
    portico: tuple[PorticoProcess, Upstream],
) -> None:
    process, _ = portico
    with process.client() as http:
        for _ in range(3):
            assert http.get("/orders/1", headers={"X-API-Key": KEY.key}).status_code == 200
        assert http.get("/orders/1").status_code == 401
        assert http.get("/orders/1", headers={"X-API-Key": "pk_nope_nope"}).status_code == 401
        assert http.get("/gone/x").status_code == 502
        assert http.get("/nowhere").status_code == 404
        assert http.post("/open/x").status_code == 405
    samples = metrics_of(scrape(process))
    requests = samples["portico_requests_total"]
    ok = (("method", "GET"), ("route", "orders"), ("service", "orders"), ("status_class", "2xx"))
    assert requests[ok] >= 3
    denied = (
        ("method", "GET"),
        ("route", "orders"),
        ("service", "orders"),
        ("status_class", "4xx"),
    )
    assert requests[denied] >= 2
    unrouted = (("method", "GET"), ("route", ""), ("service", ""), ("status_class", "4xx"))
    assert requests[unrouted] >= 1
    assert (
        requests[(("method", "POST"), ("route", ""), ("service", ""), ("status_class", "4xx"))] >= 1
    )
    gone = (("method", "GET"), ("route", "gone"), ("service", "gone"), ("status_class", "5xx"))
    assert requests[gone] >= 1

    buckets = samples["portico_request_duration_seconds_bucket"]
    total = buckets[(("le", "+Inf"), ("route", "orders"), ("service", "orders"))]
    assert total >= 5
    assert (
        samples["portico_request_duration_seconds_count"][
            (("route", "orders"), ("service", "orders"))
        ]
        == total
    )
    upstream_count = samples["portico_upstream_duration_seconds_count"][
        (("route", "orders"), ("service", "orders"))
    ]
    assert upstream_count >= 3  # only the requests that reached the upstream

    failures = samples["portico_auth_failures_total"]
    assert failures[(("method", "none"), ("reason", "missing"), ("route", "orders"))] >= 1
    assert failures[(("method", "api_key"), ("reason", "invalid"), ("route", "orders"))] >= 1

    errors = samples["portico_upstream_errors_total"]
    assert errors[(("kind", "connect"), ("service", "gone"))] >= 1
    # retries: 1, but the only target was tried already: nothing to retry on.
    assert samples["portico_upstream_retries_total"][(("service", "gone"),)] == 0
    healthy = samples["portico_upstream_target_healthy"]
    assert any(dict(k)["service"] == "orders" and v == 1 for k, v in healthy.items())
    states = samples["portico_circuit_breaker_state"]
    closed = [
        v
        for k, v in states.items()
        if dict(k)["service"] == "orders" and dict(k)["state"] == "closed"
    ]
    assert closed == [1]
    assert samples["portico_upstream_healthy_targets"][(("service", "orders"),)] == 1
    assert samples["process_resident_memory_bytes"][()] > 0


def test_calls_to_a_deprecated_route_are_counted_by_consumer(
    portico: tuple[PorticoProcess, Upstream],
) -> None:
    process, _ = portico
    with process.client() as http:
        for _ in range(2):
            assert http.get("/legacy/1", headers={"X-API-Key": KEY.key}).status_code == 200
        assert http.get("/legacy/1").status_code == 401
    calls = metrics_of(scrape(process))["portico_deprecated_requests_total"]
    assert calls[(("consumer", "acme/shop"), ("route", "legacy"))] >= 2
    assert calls[(("consumer", ""), ("route", "legacy"))] >= 1
    assert not any(dict(labels)["route"] != "legacy" for labels in calls)


def test_masked_and_refused_responses_are_counted(
    portico: tuple[PorticoProcess, Upstream],
) -> None:
    process, _ = portico
    with process.client() as http:
        masked = http.get("/masked/orders")  # the echo: JSON, its "headers" member removed
        assert masked.status_code == 200 and "headers" not in masked.json()
        assert http.get("/masked/bytes/10").status_code == 502  # octet-stream: not JSON
    samples = metrics_of(scrape(process))
    assert samples["portico_masked_responses_total"][(("route", "masked"),)] >= 1
    refusals = samples["portico_mask_refusals_total"]
    assert refusals[(("reason", "content_type"), ("route", "masked"))] >= 1


def test_reloads_are_counted_by_result(portico: tuple[PorticoProcess, Upstream]) -> None:
    process, upstream = portico
    before = metrics_of(scrape(process))["portico_config_reloads_total"]
    process.write_text("routes: [oops\n")
    process.signal(signal.SIGHUP)
    wait_for(
        lambda: (
            metrics_of(scrape(process))["portico_config_reloads_total"][(("result", "failure"),)]
            > before[(("result", "failure"),)]
        ),
        what="a failed reload to be counted",
    )
    process.write(config(upstream))
    process.signal(signal.SIGHUP)
    wait_for(
        lambda: (
            metrics_of(scrape(process))["portico_config_reloads_total"][(("result", "success"),)]
            > before[(("result", "success"),)]
        ),
        what="a successful reload to be counted",
    )
    # Counters survive the reload: the route keeps its counts.
    samples = metrics_of(scrape(process))
    routes = config(upstream)["routes"]
    assert isinstance(routes, list)
    assert samples["portico_routes"][()] == len(routes)
    assert any(dict(k)["route"] == "orders" for k in samples["portico_requests_total"])


def test_promtool_accepts_a_real_scrape(portico: tuple[PorticoProcess, Upstream]) -> None:
    process, _ = portico
    with process.client() as http:
        http.get("/orders/1", headers={"X-API-Key": KEY.key})
    result = promtool("check", "metrics", stdin=scrape(process))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout  # not even a naming warning


def test_a_real_prometheus_scrapes_portico_and_computes_a_p99(
    portico: tuple[PorticoProcess, Upstream], tmp_path: Path
) -> None:
    process, _ = portico
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: portico\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{process.operations_port}']}}]\n"
    )
    stop = threading.Event()

    def traffic() -> None:
        with process.client() as http:
            while not stop.is_set():
                http.get("/orders/1", headers={"X-API-Key": KEY.key})
                time.sleep(0.005)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        with running_prometheus(tmp_path / "prometheus.yml", tmp_path) as prometheus:
            query = (
                "histogram_quantile(0.99, sum by (le) "
                '(rate(portico_request_duration_seconds_bucket{route="orders"}[15s])))'
            )

            def p99() -> float | None:
                result = prometheus.result(query)
                if not result:
                    return None
                value = float(result[0]["value"][1])
                return value if value == value and value > 0 else None  # NaN until two scrapes

            value = wait_for(p99, timeout=60, interval=0.5, what="Prometheus to compute the p99")
            assert 0 < value <= 60  # seconds, within the histogram's buckets
            up = prometheus.result('up{job="portico"}')
            assert up[0]["value"][1] == "1"
    finally:
        stop.set()
        sender.join(timeout=10)


def test_readiness_reports_an_unreachable_store_as_503() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        dead = f"postgresql+psycopg://portico@127.0.0.1:{holder.getsockname()[1]}/portico"
        recorder = RevisionRecorder(dead)

        async def failing_config() -> None:
            raise RuntimeError("config not loaded")

        async def scenario() -> tuple[int, dict[str, object]]:
            from prometheus_client import CollectorRegistry

            checks = (recorder.readiness(), ReadinessCheck("config", failing_config))
            operations = Operations(CollectorRegistry(), checks)
            await operations.start("127.0.0.1", 0)
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, _get_ready, operations.port)
            finally:
                await operations.stop()

        status, body = asyncio.run(scenario())
        recorder.close()
    assert status == 503
    assert body["status"] == "not ready"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["config"] == "config not loaded"
    assert checks["store"] != "ok"


def _get_ready(port: int) -> tuple[int, dict[str, object]]:
    with RawConnection(port) as conn:
        conn.send(b"GET /readyz HTTP/1.1\r\nHost: ops\r\n\r\n")
        response = conn.read_response()
    return response.status, response.json()
