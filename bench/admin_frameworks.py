"""FastAPI against Litestar for the admin API, on its typical request, in one run.

Each candidate in ``bench/admin_frameworks/`` serves the same authenticated list read
(``GET /admin/v1/consumers?limit=50`` with a bearer admin token: the token checked as Portico
checks one, a page of 50 of 500 consumers as JSON, see ``_common.py``) with its own idiomatic
typed models, under the same uvicorn (one process, uvloop, httptools). ``wrk`` loads each in
turn over keep-alive connections; the figures are requests/s and the server's CPU time per
request (user + system, from ``/proc``: steadier than requests/s on a shared machine), and the
ratio of the two candidates is printed. The packages live in ``bench/.venv-admin`` (made on the
first run from the pinned ``bench/admin-frameworks-requirements.txt``), never in the project's
``.venv``.

    .venv/bin/python bench/admin_frameworks.py                 # 10 s per run, one round
    .venv/bin/python bench/admin_frameworks.py --rounds 3 --duration 5

The admin API is not on the data plane's path; the point is the price of each framework per
request, which the admin listener pays on a core the gateway shares in the embedded mode.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import harness
from harness import Server, Throughput, fmt_ms, fmt_rps, progress, spread, table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv-admin"
REQUIREMENTS = BENCH / "admin-frameworks-requirements.txt"
SOURCES = BENCH / "admin_frameworks"
PATH = "/admin/v1/consumers?limit=50"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    script: str


CANDIDATES = (Candidate("fastapi", "fastapi_app.py"), Candidate("litestar", "litestar_app.py"))


def ensure_venv() -> Path:
    """Creates or updates ``bench/.venv-admin`` when the pinned requirements changed."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements-sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return python
    progress(f"installing {REQUIREMENTS.name} into {VENV}")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(VENV)], check=True)
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        uv = ROOT / ".venv" / "bin" / "uv"
    subprocess.run(
        [str(uv), "pip", "sync", "--quiet", "--python", str(python), str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted + "\n")
    return python


def token() -> str:
    sys.path.insert(0, str(SOURCES))
    from _common import TOKEN

    return str(TOKEN)


def start(stack: object, workdir: Path, candidate: Candidate, python: Path) -> Server:
    port = harness.free_port()
    argv = [str(python), str(SOURCES / candidate.script), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(SOURCES)}
    return harness.start_server(stack, candidate.name, argv, port, workdir, env=env)  # type: ignore[arg-type]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=16, help="wrk keep-alive connections")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every measurement, interleaved; medians"
    )
    args = parser.parse_args(argv)
    if min(args.duration, args.connections, args.rounds) <= 0:
        parser.error("--duration, --connections and --rounds must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.WRK)
    python = ensure_venv()
    headers = {"Authorization": f"Bearer {token()}"}
    load_before = harness.machine_summary()
    runs: dict[str, list[tuple[Throughput, float]]] = {c.name: [] for c in CANDIDATES}
    with harness.bench_session("portico-admin-frameworks-") as (stack, workdir):
        servers = {c.name: start(stack, workdir, c, python) for c in CANDIDATES}
        for number in range(1, args.rounds + 1):
            for name, server in servers.items():
                progress(f"[round {number}/{args.rounds}] wrk -> {name}")
                result = harness.measure_with_cpu(
                    server.url.rstrip("/") + PATH,
                    server.process.pid,
                    headers=headers,
                    connections=args.connections,
                    seconds=args.duration,
                    warmup=args.warmup,
                )
                if result[0].errors:
                    raise SystemExit(f"{name} answered errors: the figures are not valid")
                runs[name].append(result)

    rows = []
    medians: dict[str, tuple[float, float]] = {}
    for name, results in runs.items():
        rps = [r.rps for r, _ in results]
        cpu = [c for _, c in results]
        medians[name] = (statistics.median(rps), statistics.median(cpu))
        rows.append(
            [
                name,
                spread(rps, fmt_rps),
                fmt_ms(statistics.median(r.p50_ms for r, _ in results)),
                fmt_ms(statistics.median(r.p99_ms for r, _ in results)),
                spread(cpu, lambda v: f"{v:,.0f}"),
            ]
        )
    rounds = f"; median of {args.rounds} rounds (min-max)" if args.rounds > 1 else ""
    print(f"machine before: {load_before}\nmachine after:  {harness.machine_summary()}")
    print(
        f"\nGET {PATH} with a bearer token; wrk -t1 -c{args.connections} -d{args.duration:g}s "
        f"keep-alive after {args.warmup:g}s warm-up{rounds}\n"
    )
    print(table(["framework", "requests/s", "p50 ms", "p99 ms", "CPU µs/request"], rows))
    fast_rps, fast_cpu = medians["fastapi"]
    lite_rps, lite_cpu = medians["litestar"]
    print(
        f"\nlitestar / fastapi: {lite_rps / fast_rps:.2f}x the requests/s, "
        f"{lite_cpu / fast_cpu:.2f}x the CPU per request"
    )
    return 0


if __name__ == "__main__":
    harness.run(main)
