"""Portico against nginx, in one run, in front of the same fast upstream.

Starts an upstream (nginx, one worker, a fixed ~100-byte JSON answer), nginx as a plain
keep-alive reverse proxy (the reference), and Portico with one worker process. Then:

``--workers N`` runs Portico with ``serve --workers N`` and nginx (the proxy and the upstream)
with ``worker_processes N``, and ``wrk`` with N threads: many processes against many processes.

1. throughput: ``wrk`` with keep-alive connections against each, after a short warm-up;
2. latency at a fixed rate (1,000 requests/s by default) with ``h2load``, and the p99 each proxy
   adds to the upstream's own.

``make bench`` runs it. Everything listens on, and is sent to, 127.0.0.1 only; every process is
stopped at the end, on error, and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import harness
from harness import (
    Results,
    Server,
    fmt_achieved,
    fmt_ms,
    fmt_rps,
    median_fixed_rate,
    median_throughput,
    spread,
    table,
)

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / ".venv" / "bin" / "portico"
TARGETS = ("direct", "nginx", "portico", "portico-nometrics", "portico-base", "portico-py")
DEFAULT_TARGETS = ("direct", "nginx", "portico")
"""``portico-py`` is the same Portico with ``PORTICO_NATIVE=0``: its code interpreted.
``portico-base`` is another commit (``--baseline``, prepared by ``bench/baseline.py``): an A/B run
of two commits in one run, under the same load. ``portico-nometrics`` is this tree with
``operations.metrics: false``: what counting for /metrics costs."""

PORTICO_CONFIG = """\
gateway:
  listen: {host}:{port}
{operations}services:
  backend:
    targets: [http://{host}:{upstream_port}]
    retries: 0
routes:
  - name: all
    match: {{path: "/{{rest:path}}"}}
    service: backend
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_load_options(parser)
    parser.add_argument(
        "--only", default=",".join(DEFAULT_TARGETS), help=f"subset of {','.join(TARGETS)}"
    )
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="Portico's `serve --workers` and nginx's worker_processes (default 1)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a portico executable of another commit (bench/baseline.py), measured as portico-base",
    )
    args = parser.parse_args(argv)
    if args.baseline is not None and "--only" not in (argv or sys.argv[1:]):
        args.only += ",portico-base"
    args.only = harness.parse_only(parser, args, TARGETS)
    if "portico-base" in args.only and args.baseline is None:
        parser.error("portico-base needs --baseline")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def start_portico(
    stack: contextlib.ExitStack,
    workdir: Path,
    upstream: Server,
    executable: Path,
    *,
    name: str = "portico",
    compiled: bool = True,
    metrics: bool = True,
    workers: int = 1,
) -> Server:
    """``portico serve`` is one process (``workers`` > 1: ``serve --workers``); its SQLite file
    lands in the temp dir (the cwd). ``compiled=False`` runs it with ``PORTICO_NATIVE=0`` (the
    hot path interpreted)."""
    if not executable.exists():
        raise SystemExit(f"{executable} not found: run `make install` first")
    port = harness.free_port()
    config = workdir / f"{name}.yaml"
    config.write_text(
        PORTICO_CONFIG.format(
            host=harness.HOST,
            port=port,
            upstream_port=upstream.port,
            # The counting stays on unless told; the listener is off (one port per process).
            # A baseline older than the operations listener knows no such section.
            operations=""
            if name == "portico-base"
            else f"operations: {{enabled: false, metrics: {'true' if metrics else 'false'}}}\n",
        )
    )
    argv = [str(executable), "serve", "-c", str(config)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = None if compiled else {**os.environ, "PORTICO_NATIVE": "0"}
    server = harness.start_server(stack, name, argv, port, workdir, env=env, ready_timeout=60)
    # The port answers once one process serves; the banner comes once every one does.
    deadline = time.monotonic() + 60
    while "Portico gateway on" not in server.log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start every process; see {server.log}")
        time.sleep(0.2)
    return server


def throughput_table(results: Results) -> str:
    runs = results.throughput
    nginx = median_throughput(runs["nginx"]).rps if "nginx" in runs else None
    rows = []
    for name, results_of_one in runs.items():
        median = median_throughput(results_of_one)
        share = f"{100 * median.rps / nginx:.0f}%" if nginx and name != "direct" else ""
        rows.append(
            [
                name,
                spread([run.rps for run in results_of_one], fmt_rps),
                fmt_ms(median.p50_ms),
                fmt_ms(median.p99_ms),
                share,
                str(median.errors),
            ]
        )
    return table(["target", "requests/s", "p50 ms", "p99 ms", "% of nginx", "errors"], rows)


def fixed_rate_table(results: Results) -> str:
    runs = results.fixed_rate
    direct = median_fixed_rate(runs["direct"]).p99_ms if "direct" in runs else None
    rows = []
    for name, results_of_one in runs.items():
        median = median_fixed_rate(results_of_one)
        added = "" if direct is None or name == "direct" else f"{median.p99_ms - direct:+.2f}"
        rows.append(
            [
                name,
                fmt_achieved(median),
                fmt_ms(median.p50_ms),
                spread([run.p99_ms for run in results_of_one], fmt_ms),
                added,
                fmt_ms(median.max_ms),
                str(median.errors),
            ]
        )
    headers = ["target", "requests/s", "p50 ms", "p99 ms", "added p99 ms", "max ms", "errors"]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK, harness.H2LOAD)
    load_before = harness.machine_summary()
    with harness.bench_session("portico-bench-") as (stack, workdir):
        upstream = harness.start_upstream(stack, workdir, args.workers)
        servers: dict[str, Server] = {}
        for name in args.only:
            if name == "direct":
                servers[name] = upstream
            elif name == "nginx":
                servers[name] = harness.start_nginx_proxy(stack, workdir, upstream, args.workers)
            else:
                executable = args.baseline if name == "portico-base" else args.portico
                servers[name] = start_portico(
                    stack,
                    workdir,
                    upstream,
                    executable,
                    name=name,
                    compiled=name != "portico-py",
                    metrics=name != "portico-nometrics",
                    workers=args.workers,
                )
        results = harness.measure(servers, args, workdir)

    rounds = f", median of {args.rounds} rounds (min-max)" if args.rounds > 1 else ""
    revision = harness.revision(ROOT)
    print(f"portico: {revision}")
    print(f"machine before: {load_before}\nmachine after:  {harness.machine_summary()}")
    print(
        f"\nThroughput: wrk -t{args.workers} -c{args.connections} -d{args.duration:g}s, "
        f"keep-alive, after {args.warmup:g}s warm-up{rounds}\n"
    )
    print(throughput_table(results))
    if results.fixed_rate:
        print(
            f"\nLatency at a fixed {args.rate:g} requests/s: h2load --h1, "
            f"{args.rate_connections} connections, {args.duration:g}s{rounds}\n"
        )
        print(fixed_rate_table(results))
    if args.json:
        harness.write_json(
            args.json,
            {
                "portico": revision,
                "machine_before": load_before,
                "machine_after": harness.machine_summary(),
                "settings": vars(args),
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
