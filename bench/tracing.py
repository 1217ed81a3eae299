"""What tracing costs on the hot path: the plain proxy with tracing off, on with every trace
sampled, and on at a low ratio, in one run; and the span bookkeeping of one exchange, recorded
as Portico does it against the SDK's ``Tracer`` API.

Three ``portico serve`` processes of the same build, one per setting, in front of the fast nginx
upstream of ``bench/gateway.py``, the two traced ones exporting over OTLP/HTTP to an nginx that
answers every export ``200`` (a collector that costs next to nothing, so that what is measured
is Portico's side: span bookkeeping on the event loop, and the SDK's export thread encoding the
batches, in the same process). ``wrk`` GETs the same path from each, the settings interleaved
round by round. Printed: requests/s (median, min-max), the share of tracing off's (median of each
round's ratio), latency, Portico's CPU µs per request (``/proc``, export thread included: it
moves less than requests/s on a shared machine), and the spans each process counted
(``portico_tracing_spans_total``: exported, dropped when the queue was full, failed).

    .venv/bin/python bench/tracing.py [--duration 10] [--rounds 3] [--ratio 0.01]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from pathlib import Path

import harness
from harness import Throughput, fmt_ms, fmt_rps, progress, table
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / ".venv" / "bin" / "portico"

PORTICO_CONFIG = """\
gateway:
  listen: {host}:{port}
operations:
  listen: {host}:{operations_port}
database:
  url: sqlite:///{workdir}/{name}.db
services:
  backend:
    targets: [http://{host}:{upstream_port}]
    retries: 0
routes:
  - name: ready
    match: {{path: /}}
    service: backend
  - name: orders
    match: {{path: "/orders/{{id}}"}}
    service: backend
{tracing}"""

TRACING = """\
tracing:
  enabled: true
  endpoint: http://{host}:{collector_port}
  sample_ratio: {ratio}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument("--ratio", type=float, default=0.01, help="the low sampling ratio")
    parser.add_argument("--spans", type=int, default=20_000, help="exchanges of the micro-bench")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.rounds, args.spans) <= 0:
        parser.error("--duration, --connections, --rounds and --spans must be positive")
    if not 0 < args.ratio < 1:
        parser.error("--ratio is between 0 and 1")
    return args


def spans_counted(host: str, port: int) -> dict[str, float]:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "portico_tracing_spans":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counted[sample.labels["outcome"]] = sample.value
    return counted


def bookkeeping(exchanges: int) -> dict[str, float]:
    """µs of span bookkeeping per exchange (a SERVER span and one CLIENT span with the
    attributes the gateway records), in this process, the export thread idle: through the SDK's
    ``Tracer`` API, and recorded as :mod:`portico.observability.otel` does."""
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from portico.config.model import TracingSettings
    from portico.observability.otel import OtlpTracing

    server = {
        "http.request.method": "GET",
        "url.path": "/orders/42",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "client.address": "127.0.0.1",
        "portico.request_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "server.address": "api.example",
        "user_agent.original": "wrk",
        "http.route": "/orders/{id}",
        "portico.route": "orders",
        "portico.service": "backend",
    }
    client = {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": 8000,
        "url.full": "http://127.0.0.1:8000/orders/42",
        "network.protocol.version": "1.1",
    }
    end = {"http.response.status_code": 200}
    # Nothing is exported while measuring: a collector that never answers, and a queue the
    # spans are cleared from between rounds.
    settings = TracingSettings(
        enabled=True,
        endpoint="http://127.0.0.1:9",
        batch={"max_queue_size": exchanges * 2 + 10, "schedule_delay": "1h"},
        shutdown_timeout=0.1,
    )
    ours = OtlpTracing(settings, lambda outcome, count: None)
    started = time.perf_counter()
    for _ in range(exchanges):
        span = ours.exchange("GET /orders/{id}", None, "", time.time_ns())
        attempt = span.upstream("GET", dict(client))
        attempt.respond(200)
        attempt.end("")
        span.end({**server, **end}, "", "")
    recorded = (time.perf_counter() - started) / exchanges * 1e6
    ours._queue._pending.clear()  # what would have been exported

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(ours._queue)  # the same processor
    tracer = provider.get_tracer("portico")
    started = time.perf_counter()
    for _ in range(exchanges):
        parent = tracer.start_span(
            "GET /orders/{id}", kind=SpanKind.SERVER, attributes=server, start_time=time.time_ns()
        )
        context = trace_api.set_span_in_context(parent)
        child = tracer.start_span("GET", context=context, kind=SpanKind.CLIENT, attributes=client)
        child.set_attributes(end)
        child.end()
        parent.set_attributes(end)
        parent.end()
    api = (time.perf_counter() - started) / exchanges * 1e6
    ours._queue._pending.clear()
    ours.shutdown()
    return {"recorded": recorded, "tracer_api": api}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK)
    if not args.portico.exists():
        raise SystemExit(f"{args.portico} not found: run `make install` first")
    load_before = harness.machine_summary()
    settings = {"off": None, "on, 100%": 1.0, f"on, {args.ratio:g}": args.ratio}
    names = list(settings)
    runs: dict[str, list[Throughput]] = {name: [] for name in names}
    cpu_us: dict[str, list[float]] = {name: [] for name in names}
    counted: dict[str, dict[str, float]] = {}
    with harness.bench_session("portico-bench-tracing-") as (stack, workdir):
        upstream = harness.start_upstream(stack, workdir)
        collector_port = harness.free_port()
        collector = harness._start_nginx(  # the harness's nginx, another site
            stack,
            workdir,
            "collector",
            collector_port,
            f"""\
    server {{
        listen {harness.HOST}:{collector_port} reuseport backlog=4096;
        client_max_body_size 64m;
        location / {{
            default_type application/x-protobuf;
            return 200 '';
        }}
    }}""",
        )
        servers: dict[str, tuple[harness.Server, int]] = {}
        for index, (name, ratio) in enumerate(settings.items()):
            port, operations_port = harness.free_port(), harness.free_port()
            tracing = (
                ""
                if ratio is None
                else TRACING.format(host=harness.HOST, collector_port=collector.port, ratio=ratio)
            )
            config = workdir / f"portico-{index}.yaml"
            config.write_text(
                PORTICO_CONFIG.format(
                    host=harness.HOST,
                    port=port,
                    operations_port=operations_port,
                    workdir=workdir,
                    name=f"portico-{index}",
                    upstream_port=upstream.port,
                    tracing=tracing,
                )
            )
            serve = [str(args.portico), "serve", "-c", str(config)]
            server = harness.start_server(
                stack, f"portico-{index}", serve, port, workdir, ready_timeout=60
            )
            servers[name] = (server, operations_port)
        for number in range(1, args.rounds + 1):
            order = names if number % 2 else names[::-1]
            for name in order:
                server, _ = servers[name]
                progress(f"[round {number}/{args.rounds}] wrk -> tracing {name}")
                result, cpu = harness.measure_with_cpu(
                    f"http://{harness.HOST}:{server.port}/orders/42",
                    server.process.pid,
                    headers=None,
                    connections=args.connections,
                    seconds=args.duration,
                    warmup=args.warmup,
                )
                runs[name].append(result)
                cpu_us[name].append(cpu)
        time.sleep(6)  # the SDK's default schedule: the last batches go out
        for name, (server, operations_port) in servers.items():
            if server.process.poll() is not None:
                raise RuntimeError(f"portico exited during the run:\n{server.log_tail()}")
            counted[name] = spans_counted(harness.HOST, operations_port)
    progress("span bookkeeping per exchange, in this process")
    micro = bookkeeping(args.spans)

    off = runs["off"]
    rows = []
    ratios: dict[str, list[float]] = {}
    for name in names:
        ratios[name] = [b.rps / a.rps for a, b in zip(off, runs[name], strict=True)]
        median = harness.median_throughput(runs[name])
        spans = counted.get(name, {})
        rows.append(
            [
                name,
                harness.spread([run.rps for run in runs[name]], fmt_rps),
                f"{100 * statistics.median(ratios[name]):.1f}%",
                fmt_ms(median.p50_ms),
                fmt_ms(median.p99_ms),
                f"{statistics.median(cpu_us[name]):.1f}",
                " / ".join(
                    f"{spans.get(outcome, 0):,.0f}" for outcome in ("exported", "dropped", "failed")
                )
                if spans
                else "-",
                str(median.errors),
            ]
        )
    revision = harness.revision(ROOT)
    print(f"\nPortico {revision} ({harness.native_status(ROOT)}); machine: {load_before}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s GET /orders/42, "
        f"{args.rounds} interleaved rounds, medians (min-max)\n"
    )
    print(
        table(
            [
                "tracing",
                "requests/s",
                "of off",
                "p50 ms",
                "p99 ms",
                "CPU µs/request",
                "spans exported / dropped / failed",
                "errors",
            ],
            rows,
        )
    )
    print(
        f"\nspan bookkeeping per exchange (server + client span, {args.spans:,} exchanges): "
        f"recorded as Portico does {micro['recorded']:.1f} µs, "
        f"through the SDK's Tracer API {micro['tracer_api']:.1f} µs"
    )
    if args.json is not None:
        harness.write_json(
            args.json,
            {
                "portico": revision,
                "machine_before": load_before,
                "settings": vars(args),
                "throughput": runs,
                "ratios_to_off": ratios,
                "cpu_us_per_request": cpu_us,
                "spans": counted,
                "bookkeeping_us": micro,
            },
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
