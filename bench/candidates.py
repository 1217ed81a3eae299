"""Candidate server/client stacks for Portico's data plane, against nginx, in one run.

Each candidate in ``bench/candidates/`` is the smallest correct forwarding proxy on one stack.
All of them, and nginx as the reference, run one worker process in front of the same upstream
and take the same ``wrk`` load; then the same fixed-rate ``h2load`` load. The candidates' packages
live in ``bench/.venv-candidates`` (made on the first run from the pinned
``bench/candidates-requirements.txt``), never in the project's ``.venv``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
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
    progress,
    spread,
    table,
)

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv-candidates"
REQUIREMENTS = BENCH / "candidates-requirements.txt"
SOURCES = BENCH / "candidates"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    script: str
    stack: str


CANDIDATES = (
    Candidate("uvicorn+httpx", "uvicorn_httpx.py", "uvicorn (uvloop, httptools) + httpx"),
    Candidate("uvicorn+aiohttp", "uvicorn_aiohttp.py", "uvicorn (uvloop, httptools) + aiohttp"),
    Candidate("granian+aiohttp", "granian_aiohttp.py", "granian ASGI (uvloop) + aiohttp"),
    Candidate("aiohttp+aiohttp", "aiohttp_web.py", "aiohttp web server (uvloop) + aiohttp"),
    Candidate("uvicorn+httpcore", "uvicorn_httpcore.py", "uvicorn (uvloop, httptools) + httpcore"),
)
REFERENCES = ("direct", "nginx")
NAMES = REFERENCES + tuple(candidate.name for candidate in CANDIDATES)


def ensure_venv() -> Path:
    """Creates or updates ``bench/.venv-candidates`` when the pinned requirements changed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements-sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    progress(f"installing {REQUIREMENTS.name} into {VENV}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    uv = ROOT / ".venv" / "bin" / "uv"
    if uv.exists():
        install = [str(uv), "pip", "sync", "--quiet", "--python", str(python), str(REQUIREMENTS)]
    else:
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        install = [*pip, "--no-deps", "-r", str(REQUIREMENTS)]
    subprocess.run(install, check=True)
    stamp.write_text(wanted + "\n")
    return python


def start_candidate(
    stack: contextlib.ExitStack, workdir: Path, candidate: Candidate, python: Path, upstream: Server
) -> Server:
    port = harness.free_port()
    argv = [
        str(python),
        str(SOURCES / candidate.script),
        "--port",
        str(port),
        "--upstream",
        f"http://{harness.HOST}:{upstream.port}",
    ]
    # granian imports the app by module name in its worker process.
    env = {**os.environ, "PYTHONPATH": str(SOURCES)}
    return harness.start_server(stack, candidate.name, argv, port, workdir, env=env)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_load_options(parser)
    parser.add_argument("--only", default=",".join(NAMES), help=f"subset of {','.join(NAMES)}")
    args = parser.parse_args(argv)
    args.only = harness.parse_only(parser, args, NAMES)
    return args


def results_table(results: Results) -> str:
    throughput, fixed = results.throughput, results.fixed_rate
    nginx = median_throughput(throughput["nginx"]).rps if "nginx" in throughput else None
    rate = next(iter(fixed.values()))[0].target_rps if fixed else 0.0
    headers = ["stack", "requests/s", "p50 ms", "p99 ms", "% of nginx"]
    if fixed:
        headers += [f"p50 @{rate:g}/s", f"p99 @{rate:g}/s", "achieved /s"]
    headers.append("errors")
    rows = []
    for name, runs in throughput.items():
        median = median_throughput(runs)
        row = [
            name,
            spread([run.rps for run in runs], fmt_rps),
            fmt_ms(median.p50_ms),
            fmt_ms(median.p99_ms),
            f"{100 * median.rps / nginx:.0f}%" if nginx and name != "direct" else "",
        ]
        errors = median.errors
        if fixed:
            at_rate = median_fixed_rate(fixed[name])
            row += [fmt_ms(at_rate.p50_ms), fmt_ms(at_rate.p99_ms), fmt_achieved(at_rate)]
            errors += at_rate.errors
        row.append(str(errors))
        rows.append(row)
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK, harness.H2LOAD)
    python = ensure_venv()
    by_name = {candidate.name: candidate for candidate in CANDIDATES}
    load_before = harness.machine_summary()
    with harness.bench_session("portico-candidates-") as (stack, workdir):
        upstream = harness.start_upstream(stack, workdir)
        servers: dict[str, Server] = {}
        for name in args.only:
            if name == "direct":
                servers[name] = upstream
            elif name == "nginx":
                servers[name] = harness.start_nginx_proxy(stack, workdir, upstream)
            else:
                servers[name] = start_candidate(stack, workdir, by_name[name], python, upstream)
        results = harness.measure(servers, args, workdir)

    rounds = f"; median of {args.rounds} rounds (min-max)" if args.rounds > 1 else ""
    fixed = (
        ""
        if args.no_fixed_rate
        else (f"; h2load --h1 at {args.rate:g} requests/s over {args.rate_connections} connections")
    )
    print(f"machine before: {load_before}\nmachine after:  {harness.machine_summary()}")
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s keep-alive after {args.warmup:g}s "
        f"warm-up{fixed}{rounds}\n"
    )
    print(results_table(results))
    if args.json:
        harness.write_json(
            args.json,
            {
                "machine_before": load_before,
                "machine_after": harness.machine_summary(),
                "settings": vars(args),
                "stacks": {candidate.name: candidate.stack for candidate in CANDIDATES},
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
