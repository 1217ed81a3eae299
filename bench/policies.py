"""What the common policies cost together: API-key auth, a Redis-backed rate limit and OpenAPI
validation of a small JSON body, against the plain proxy of the same build, in one run.

One ``portico serve`` process, in front of the fast nginx upstream of ``bench/gateway.py``, with a
throwaway ``redis-server`` (Debian's) as its shared state, serves the same upstream on two routes:

- ``/plain/orders``: no policy, the plain proxy;
- ``/policies/orders``: ``auth`` (``api_key``), ``rate-limit`` (one per-consumer limit in Redis,
  high enough never to refuse, so every request costs its Redis round trip) and ``validation``
  (the body checked against the service's OpenAPI document).

``wrk`` POSTs the same small JSON order to both, with the same keep-alive connections, the
routes interleaved round by round. The figure is the policies' throughput as a share of the plain
proxy's (median of each round's ratio); the issue sets the bar at 75 % (Kong 3.9 keeps 75 % with
key-auth and rate limiting). Portico's CPU time per request (from ``/proc``) is printed too: it
does not move with other load on a shared machine, Redis's own CPU is not in it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import statistics
import subprocess
from collections.abc import Iterable
from pathlib import Path

import harness
from harness import Throughput, fmt_ms, fmt_rps, progress, table

from portico.identity.apikeys import NewApiKey, generate_key

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / ".venv" / "bin" / "portico"
ROUTES = ("plain", "policies")
BAR = 75.0
"""Percent of plain-proxy throughput the issue asks the three policies to keep."""
BODY = '{"sku": "A-1001", "quantity": 2, "note": "leave at the door"}'

OPENAPI = """\
openapi: 3.1.0
info: {title: orders, version: "1"}
paths:
  /orders:
    post:
      operationId: createOrder
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [sku, quantity]
              additionalProperties: false
              properties:
                sku: {type: string, pattern: "^[A-Z]-[0-9]{4}$"}
                quantity: {type: integer, minimum: 1, maximum: 100}
                note: {type: string, maxLength: 200}
      responses:
        "200": {description: created}
"""

PORTICO_CONFIG = """\
gateway:
  listen: {host}:{port}
database:
  url: sqlite:///{workdir}/portico.db
redis:
  url: redis://{host}:{redis_port}/0
services:
  backend:
    targets: [http://{host}:{upstream_port}]
    retries: 0
  orders:
    targets: [http://{host}:{upstream_port}]
    retries: 0
    openapi: {workdir}/orders.yaml
routes:
  - name: ready
    match: {{path: /}}
    service: backend
  - name: plain
    match: {{path: "/plain/{{rest:path}}"}}
    service: backend
    strip_prefix: /plain
  - name: policies
    match: {{path: "/policies/{{rest:path}}"}}
    service: orders
    strip_prefix: /policies
    policies:
{policies}
tenants:
  bench:
    consumers:
      load:
        api_keys:
          - {{id: {key_id}, sha256: {sha256}}}
"""

POLICIES = {
    "auth": "      - {type: auth, methods: [api_key]}",
    "rate-limit": "      - {type: rate-limit, limits: [{name: b, limit: 10000000, window: 1m}]}",
    "validation": "      - {type: validation}",
}
"""The policies of the measured route, by the name ``--only`` gives; all three by default."""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    parser.add_argument(
        "--only",
        default=",".join(POLICIES),
        help="the policies of the measured route, comma-separated (what each costs alone)",
    )
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in POLICIES]
    if unknown or not args.only:
        parser.error(f"--only takes some of {', '.join(POLICIES)}")
    if min(args.duration, args.connections, args.rounds) <= 0:
        parser.error("--duration, --connections and --rounds must be positive")
    return args


def check(port: int, path: str, headers: dict[str, str]) -> None:
    """One request before measuring: a refusal would make wrk measure 4xx, not the policies."""
    connection = http.client.HTTPConnection(harness.HOST, port, timeout=10)
    try:
        connection.request(
            "POST", path, body=BODY, headers={**headers, "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {body!r}")


def prepare(
    stack: contextlib.ExitStack, workdir: Path, port: int, key: NewApiKey, only: Iterable[str]
) -> tuple[Path, Path, int]:
    """Start the upstream and Redis; write the config (the routes on ``port``, the policies
    named in ``only``), the OpenAPI document and wrk's POST script. Returns the config, the
    script and Redis's port (``bench/server_instructions.py`` serves the same)."""
    upstream = harness.start_upstream(stack, workdir)
    redis_port = harness.start_redis(stack, workdir)
    (workdir / "orders.yaml").write_text(OPENAPI)
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=BODY))
    config = workdir / "portico.yaml"
    config.write_text(
        PORTICO_CONFIG.format(
            host=harness.HOST,
            port=port,
            upstream_port=upstream.port,
            redis_port=redis_port,
            workdir=workdir,
            key_id=key.id,
            sha256=key.sha256,
            policies="\n".join(POLICIES[name] for name in only),
        )
    )
    return config, script, redis_port


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK)
    if not args.portico.exists():
        raise SystemExit(f"{args.portico} not found: run `make install` first")
    load_before = harness.machine_summary()
    key = generate_key()
    headers = {"plain": {}, "policies": {"X-API-Key": key.key}}
    runs: dict[str, list[Throughput]] = {name: [] for name in ROUTES}
    cpu_us: dict[str, list[float]] = {name: [] for name in ROUTES}
    with harness.bench_session("portico-bench-policies-") as (stack, workdir):
        port = harness.free_port()
        config, script, redis_port = prepare(stack, workdir, port, key, args.only)
        serve = [str(args.portico), "serve", "-c", str(config)]
        portico = harness.start_server(stack, "portico", serve, port, workdir, ready_timeout=60)
        base = f"http://{harness.HOST}:{port}"
        for name in ROUTES:
            check(port, f"/{name}/orders", headers[name])
        for number in range(1, args.rounds + 1):
            for name in ROUTES if number % 2 else ROUTES[::-1]:
                progress(f"[round {number}/{args.rounds}] wrk -> {name}")
                result, cpu = harness.measure_with_cpu(
                    f"{base}/{name}/orders",
                    portico.process.pid,
                    headers=headers[name],
                    connections=args.connections,
                    seconds=args.duration,
                    warmup=args.warmup,
                    script=script,
                )
                runs[name].append(result)
                cpu_us[name].append(cpu)
        if portico.process.poll() is not None:
            raise RuntimeError(f"portico exited during the run:\n{portico.log_tail()}")
        counted = subprocess.run(
            ["redis-cli", "-p", str(redis_port), "dbsize"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    plain = statistics.median(run.rps for run in runs["plain"])
    ratios = [p2.rps / p1.rps for p1, p2 in zip(runs["plain"], runs["policies"], strict=True)]
    kept = 100 * statistics.median(ratios)
    rows = []
    for name in ROUTES:
        median = harness.median_throughput(runs[name])
        rows.append(
            [
                name,
                harness.spread([run.rps for run in runs[name]], fmt_rps),
                f"{100 * median.rps / plain:.1f}%",
                fmt_ms(median.p50_ms),
                fmt_ms(median.p99_ms),
                f"{statistics.median(cpu_us[name]):.1f}",
                str(median.errors),
            ]
        )
    revision = harness.revision(ROOT)
    print(f"\nPortico {revision}; machine: {load_before}; keys in Redis after the run: {counted}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s POST {len(BODY)}-byte JSON, "
        f"{args.rounds} interleaved rounds, medians (min-max)\n"
    )
    print(
        table(
            ["route", "requests/s", "of plain", "p50 ms", "p99 ms", "CPU µs/request", "errors"],
            rows,
        )
    )
    verdict = "meets" if kept >= BAR else "BELOW"
    print(
        f"\n{' + '.join(args.only)} keep{'s' if len(args.only) == 1 else ''} {kept:.1f}% of "
        "plain-proxy throughput "
        f"(median of the per-round ratios; {verdict} the {BAR:g}% bar)"
    )
    if args.json is not None:
        harness.write_json(
            args.json,
            {
                "portico": revision,
                "machine_before": load_before,
                "settings": vars(args),
                "throughput": runs,
                "per_round_ratios": ratios,
                "cpu_us_per_request": cpu_us,
                "kept_percent": kept,
            },
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
