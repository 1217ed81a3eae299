"""What JWT verification costs: Portico with and without bearer-token auth, in one run.

One ``portico serve`` process, in front of the fast nginx upstream of ``bench/gateway.py``, serves
the same upstream on three routes:

- ``/plain/...``: no policy, the plain proxy;
- ``/oauth/...``: ``auth`` with the ``oauth`` method (a token of Portico's own authorization
  server) and a scope check;
- ``/idp/...``: ``auth`` with ``jwt:self``, an external identity provider whose JWKS URL is
  Portico's own, so the same token is verified the way a partner IdP's would be.

``wrk`` drives each route with the same keep-alive connections (the bearer routes with an
``Authorization`` header), the routes interleaved round by round. The figure is the cost of
verification as a share of plain proxy throughput: ``1 - rps(route) / rps(plain)``. The issue sets
the bar at 20 %: verified tokens are cached by hash until they expire, so after a token's first
request verification is a SHA-256 and two dictionary lookups.

Alongside: the CPU time the Portico process used per request in each run (user + system, from
``/proc``), the microseconds the ``auth`` policy itself takes per request with a cached token
(measured in this process on the same config and database, a figure the noise of a shared machine
disturbs far less), and what one verification costs when the token is not in the cache
(signature and claims), for EdDSA and RS256, to show what the cache saves.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import harness
from harness import Throughput, fmt_ms, fmt_rps, progress, table

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / ".venv" / "bin" / "portico"
ROUTES = ("plain", "oauth", "idp")
BAR = 20.0
"""Percent of plain throughput the issue allows JWT verification (with a scope check) to cost."""
CLIENT_ID = "bench-app"
CLIENT_SECRET = "bench-secret-" + "x" * 24

PORTICO_CONFIG = """\
gateway:
  listen: {host}:{port}
database:
  url: sqlite:///{workdir}/portico.db
services:
  backend:
    targets: [http://{host}:{upstream_port}]
    retries: 0
routes:
  - name: ready
    match: {{path: /}}
    service: backend
  - name: plain
    match: {{path: "/plain/{{rest:path}}"}}
    service: backend
    strip_prefix: /plain
  - name: oauth
    match: {{path: "/oauth/{{rest:path}}"}}
    service: backend
    strip_prefix: /oauth
    policies:
      - type: auth
        methods: [oauth]
        scopes: [bench:read]
  - name: idp
    match: {{path: "/idp/{{rest:path}}"}}
    service: backend
    strip_prefix: /idp
    policies:
      - type: auth
        methods: ["jwt:self"]
        scopes: [bench:read]
tenants:
  bench:
    consumers:
      load:
        scopes: [bench:read]
        oauth: {{client_id: {client_id}, client_secret: {client_secret}}}
identity:
  oauth:
    issuer: http://{host}:{port}
    signing_algorithm: {algorithm}
  providers:
    self:
      issuer: http://{host}:{port}
      jwks_uri: http://{host}:{port}/.well-known/jwks.json
      audiences: [http://{host}:{port}]
      claims: {{consumer: sub, tenant: tenant, scopes: scope}}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians shown")
    parser.add_argument("--algorithm", choices=["EdDSA", "RS256"], default="EdDSA")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.rounds) <= 0:
        parser.error("--duration, --connections and --rounds must be positive")
    return args


def request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(harness.HOST, port, timeout=10)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def fetch_token(port: int) -> str:
    """A token from Portico's token endpoint (client credentials, client_secret_basic)."""
    credentials = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    status, body = request(
        port,
        "POST",
        "/oauth2/token",
        {
            "authorization": f"Basic {credentials}",
            "content-type": "application/x-www-form-urlencoded",
        },
        b"grant_type=client_credentials",
    )
    if status != 200:
        raise RuntimeError(f"the token endpoint answered {status}: {body!r}")
    token: str = json.loads(body)["access_token"]
    return token


def check(port: int, path: str, token: str | None) -> None:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    status, body = request(port, "GET", path, headers)
    if status != 200:
        raise RuntimeError(f"{path} answered {status}: {body!r}")


def verification_cost(algorithm: Literal["EdDSA", "RS256"], count: int = 2000) -> float:
    """Microseconds per verification of a token that is not cached (best of five batches)."""
    from portico.identity.oauth.keys import KeyRing, SigningKey
    from portico.identity.oauth.tokens import TokenPolicy

    now = datetime.now(UTC)
    key = SigningKey.generate(algorithm, now)
    ring = KeyRing.build([key], now)
    policy = TokenPolicy(issuer="https://bench.example", audience="https://bench.example", ttl=3600)
    token = policy.issue(
        key,
        consumer="bench/load",
        tenant="bench",
        client_id=CLIENT_ID,
        scopes=["bench:read"],
        now=int(time.time()),
    ).token
    batches = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            policy.verify(token, ring)
        batches.append((time.perf_counter() - started) / count * 1e6)
    return min(batches)


def policy_costs(config: Path, token: str, count: int = 20000) -> dict[str, float]:
    """Microseconds the ``auth`` policy of each bearer route adds to a request whose token is
    cached, measured in this process against the benchmark's own config and database (best of
    seven batches, less the cost of building the exchange): a figure the noise of a shared
    machine disturbs far less than end-to-end throughput."""
    import asyncio

    from portico.assembly import build_runtime, load_config
    from portico.gateway.exchange import Exchange, Reply
    from portico.gateway.headers import Headers
    from portico.identity.context import Extensions
    from portico.identity.oauth.state import OAuthState
    from portico.identity.state import IdentityState
    from portico.store.database import Database
    from portico.store.secrets import open_secrets

    loaded = load_config(config)
    identity = IdentityState.open(loaded)
    url = loaded.database.url
    state = OAuthState(Database(url), open_secrets(url, loaded.database.secrets_key_file))
    state.load()
    runtime = build_runtime(
        loaded, extensions=Extensions(identity=identity, oauth=state), endpoints=("oauth",)
    )
    fields = [
        ("host", f"{harness.HOST}:8080"),
        ("user-agent", "wrk"),
        ("accept", "*/*"),
        ("authorization", f"Bearer {token}"),
    ]
    costs: dict[str, float] = {}

    async def measure() -> None:
        for name in ROUTES[1:]:
            route, _ = runtime.router.match("GET", harness.HOST, f"/{name}/", Headers())
            policy = route.pipeline[0]

            def exchange(path: str = f"/{name}/", route: object = route) -> Exchange:
                return Exchange(
                    method="GET",
                    path=path,
                    query="",
                    headers=Headers(fields),
                    http_version="1.1",
                    scheme="http",
                    host=harness.HOST,
                    client_ip=harness.HOST,
                    peer_ip=harness.HOST,
                    request_id="0" * 32,
                    route=route,  # type: ignore[arg-type]
                    path_params={},
                    upstream_path="/",
                )

            first = policy.on_request(exchange())
            if first is not None and not isinstance(first, Reply):
                first = await first  # jwt:self fetches the JWKS once
            if first is not None:
                raise RuntimeError(f"the benchmark token was refused on /{name}/")

            def batch(with_policy: bool, policy: object = policy) -> float:
                started = time.perf_counter()
                for _ in range(count):
                    if with_policy:
                        if policy.on_request(exchange()) is not None:  # type: ignore[attr-defined]
                            raise RuntimeError("the benchmark token was refused")
                    else:
                        exchange()
                return (time.perf_counter() - started) / count * 1e6

            bare = min(batch(False) for _ in range(7))
            costs[name] = min(batch(True) for _ in range(7)) - bare

    try:
        asyncio.run(measure())
    finally:
        identity.close()
        state.close()
    return costs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK)
    if not args.portico.exists():
        raise SystemExit(f"{args.portico} not found: run `make install` first")
    load_before = harness.machine_summary()
    runs: dict[str, list[Throughput]] = {name: [] for name in ROUTES}
    cpu_per_request: dict[str, list[float]] = {name: [] for name in ROUTES}
    with harness.bench_session("portico-bench-jwt-") as (stack, workdir):
        upstream = harness.start_upstream(stack, workdir)
        port = harness.free_port()
        config = workdir / "portico.yaml"
        config.write_text(
            PORTICO_CONFIG.format(
                host=harness.HOST,
                port=port,
                upstream_port=upstream.port,
                workdir=workdir,
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                algorithm=args.algorithm,
            )
        )
        serve = [str(args.portico), "serve", "-c", str(config)]
        portico = harness.start_server(stack, "portico", serve, port, workdir, ready_timeout=60)
        base = f"http://{harness.HOST}:{port}"
        token = fetch_token(port)
        tokens = {"plain": None, "oauth": token, "idp": token}
        for name in ROUTES:
            check(port, f"/{name}/", tokens[name])  # also fetches the JWKS for jwt:self
        for number in range(1, args.rounds + 1):
            # Rotate which route goes first, so none always follows another's load.
            shift = (number - 1) % len(ROUTES)
            for name in ROUTES[shift:] + ROUTES[:shift]:
                url = f"{base}/{name}/"
                progress(f"[round {number}/{args.rounds}] wrk -> {name}")
                bearer = tokens[name]
                run, cpu = harness.measure_with_cpu(
                    url,
                    portico.process.pid,
                    headers=None if bearer is None else {"Authorization": f"Bearer {bearer}"},
                    connections=args.connections,
                    seconds=args.duration,
                    warmup=args.warmup,
                )
                runs[name].append(run)
                cpu_per_request[name].append(cpu)
        if portico.process.poll() is not None:
            raise RuntimeError(f"portico exited during the run:\n{portico.log_tail()}")
        progress("measuring the policy in this process")
        in_process = policy_costs(config, token)

    progress("measuring verification without the cache")
    uncached = {alg: verification_cost(alg) for alg in ("EdDSA", "RS256")}

    # The cost of a route: the median over rounds of 1 - rps(route) / rps(plain) in that round,
    # which cancels the machine's drift between rounds better than a ratio of medians.
    costs = {
        name: 100
        * statistics.median(
            1 - run.rps / plain.rps for run, plain in zip(runs[name], runs["plain"], strict=True)
        )
        for name in ROUTES[1:]
    }
    rows = []
    for name in ROUTES:
        median = harness.median_throughput(runs[name])
        rows.append(
            [
                name,
                harness.spread([run.rps for run in runs[name]], fmt_rps),
                fmt_ms(median.p50_ms),
                fmt_ms(median.p99_ms),
                f"{costs[name]:.1f}%" if name in costs else "",
                f"{statistics.median(cpu_per_request[name]):.1f}",
                f"{in_process[name]:.1f}" if name in in_process else "",
                str(median.errors),
            ]
        )
    revision = harness.revision(ROOT)
    print(f"\nPortico {revision}; {args.algorithm} tokens; machine: {load_before}")
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} interleaved rounds, "
        "medians (min-max)\n"
    )
    headers = [
        "route",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "cost vs plain",
        "CPU µs/request",
        "policy µs",
        "errors",
    ]
    print(table(headers, rows))
    for name, cost in costs.items():
        verdict = "within" if cost <= BAR else "OVER"
        print(
            f"\n{name}: JWT verification + scope check costs {cost:.1f}% of plain throughput "
            f"(median of the per-round ratios; {verdict} the {BAR:g}% bar)"
        )
    print("\nOne verification of a token not in the cache (this process, best of 5):\n")
    print(
        table(
            ["algorithm", "µs per token"],
            [[alg, f"{cost:.1f}"] for alg, cost in uncached.items()],
        )
    )
    if args.json is not None:
        harness.write_json(
            args.json,
            {
                "portico": revision,
                "machine_before": load_before,
                "machine_after": harness.machine_summary(),
                "settings": vars(args),
                "throughput": runs,
                "cpu_us_per_request": cpu_per_request,
                "cost_percent": costs,
                "policy_us": in_process,
                "uncached_verification_us": uncached,
            },
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
