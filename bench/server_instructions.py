"""Instructions per request of a real ``portico serve`` under load, plain route against the three
policies of ``bench/policies.py``, counted by callgrind: the figure behind that benchmark's ratio,
in instructions rather than seconds.

``bench/instructions.py`` counts the gateway's work in a harness (in-memory transports, requests
fed straight to the connection objects). On 2026-12-04 it gave the three policies about +29 K
instructions over the plain proxy; the real server, counted here, +40 K: the harness leaves out
part of what a real request costs (httptools parsing the extra request fields, the body collected
before the pipeline runs, the event loop's callbacks). This counts all of it:

1. ``portico serve`` (this tree's, or ``--portico`` another build's from ``bench/baseline.py``)
   starts under ``valgrind --tool=callgrind``, in front of nginx and a throwaway Redis, with the
   config of ``bench/policies.py``;
2. for each route and round: a warm-up ``wrk`` run, ``callgrind_control --zero``, a measured
   ``wrk`` run (``--connections``, ``--seconds``: under callgrind the server answers ~50 times
   slower, so a few thousand requests), ``callgrind_control --dump``;
3. the dump's total over the requests ``wrk`` completed is the figure (requests still in flight
   when ``wrk`` stops are counted in neither: a bias under 1 % at the default 2 connections),
   less what the server does in the same time with no request (timers, health checks),
   measured in an idle spell (``--idle`` seconds) before each run.

Under callgrind the server answers a few hundred requests a second, not thousands: work that
comes with time rather than with requests weighs ~30 times more per request than in production.
The idle spell takes most of it out (7-9 K per request before it was subtracted, and the cause
of up to 10 % between runs); what still moves with the rate is the rate limit's leases, asked
for more often per request at a low rate (a spread of 1-2 K between rounds). Compare builds
back to back, and the minimum of the rounds.

With many connections the slowed server also falls behind its own Redis answers: a lease asked
for ahead arrives after the permits left in the process are spent, and the requests that find
it spent wait for it (a task each, 4-25 % of the requests in a run, +3-8 K per request on
average, and the main cause of the spread between runs). At the real server's rate the answer
comes in time (no waiting request in a ``perf`` profile of ``bench/policies.py``).
Two connections (the default) keep the loop short enough for it to come in time here too: the
figure to compare builds with.

::

    .venv/bin/python bench/server_instructions.py
    .venv/bin/python bench/baseline.py 9bdc66d
    .venv/bin/python bench/server_instructions.py --portico /tmp/portico-baseline-9bdc66d/portico

``--keep DIR`` keeps the dumps (``callgrind_annotate --inclusive=yes DIR/callgrind.out.*``): the
server is started with uncompressed names, so each dump can be read on its own. Takes 3-5 minutes
(most of it the server starting under callgrind).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import progress, table

import policies
from portico.identity.apikeys import generate_key

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / ".venv" / "bin" / "portico"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    parser.add_argument("--rounds", type=int, default=1, help="measured runs per route")
    parser.add_argument("--seconds", type=float, default=15.0, help="each measured wrk run")
    parser.add_argument("--connections", type=int, default=2, help="wrk connections (see above)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="the idle spell measured before each run"
    )
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps into this folder")
    return parser.parse_args(argv)


def zero(pid: str) -> None:
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)


def dump(pid: str, out: Path, label: str, args: argparse.Namespace) -> int:
    """Dump the counts since the last zero; their total."""
    subprocess.run(["callgrind_control", f"--dump={label}", pid], check=True, capture_output=True)
    time.sleep(1)
    written = max(glob.glob(f"{out}.*"), key=os.path.getmtime)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(written, args.keep / f"callgrind.out.{label}")
    return total_of(written)


def counted_while(pid: str, out: Path, label: str, args: argparse.Namespace) -> tuple[int, float]:
    """The instructions of an idle spell of ``--idle`` seconds, and its length."""
    zero(pid)
    started = time.monotonic()
    time.sleep(args.idle)
    total = dump(pid, out, label, args)
    return total, time.monotonic() - started


def total_of(dump: str) -> int:
    with open(dump) as lines:
        for line in lines:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"{dump}: callgrind wrote no total")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX, harness.WRK)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("missing valgrind: apt-get install valgrind")
    key = generate_key()
    headers: dict[str, dict[str, str]] = {"plain": {}, "policies": {"X-API-Key": key.key}}
    counted: dict[str, list[float]] = {name: [] for name in policies.ROUTES}
    rates: dict[str, list[float]] = {name: [] for name in policies.ROUTES}
    with harness.bench_session("portico-bench-server-instructions-") as (stack, workdir):
        port = harness.free_port()
        config, script, _ = policies.prepare(stack, workdir, port, key, policies.POLICIES)
        out = workdir / "callgrind.out"
        argv_ = [
            "valgrind",
            "--tool=callgrind",
            "--compress-strings=no",
            "--compress-pos=no",
            # A console script or a shell script that execs Python (bench/baseline.py's).
            "--trace-children=yes",
            f"--callgrind-out-file={out}",
            str(args.portico),
            "serve",
            "-c",
            str(config),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        progress("portico serve under callgrind (a minute or more to start)")
        server = harness.start_server(
            stack, "portico", argv_, port, workdir, env=env, ready_timeout=900
        )
        pid = str(server.process.pid)
        base = f"http://{harness.HOST}:{port}"
        for number in range(1, args.rounds + 1):
            for name in policies.ROUTES:
                url = f"{base}/{name}/orders"
                progress(f"[round {number}/{args.rounds}] {name}")
                fields = headers[name]
                harness.run_wrk(
                    url, connections=args.connections, seconds=3, headers=fields, script=script
                )
                # What the server does with no request (timers, health checks), per second:
                # taken off the loaded run's count for its duration.
                idle, idle_seconds = counted_while(pid, out, f"idle-{name}-{number}", args)
                zero(pid)
                started = time.monotonic()
                run = harness.run_wrk(
                    url,
                    connections=args.connections,
                    seconds=args.seconds,
                    headers=fields,
                    script=script,
                )
                label = f"{name}-{number}"
                total = dump(pid, out, label, args)
                elapsed = time.monotonic() - started
                busy = total - idle / idle_seconds * elapsed
                counted[name].append(busy / max(run.requests, 1))
                rates[name].append(run.rps)
    revision = harness.revision(ROOT) if args.portico == PORTICO else str(args.portico)
    plain = min(counted["plain"])
    rows = [
        [
            name,
            " / ".join(f"{value:,.0f}" for value in counted[name]),
            f"{min(counted[name]) - plain:+,.0f}",
            f"{100 * plain / min(counted[name]):.1f}%",
            " / ".join(f"{rate:,.0f}" for rate in rates[name]),
        ]
        for name in policies.ROUTES
    ]
    print(f"\nPortico {revision}; wrk -c{args.connections} -d{args.seconds:g}s per round")
    headings = ["route", "instructions/request", "over plain", "plain / this", "requests/s"]
    print(table(headings, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
