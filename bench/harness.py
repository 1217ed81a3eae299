"""What the benchmarks share: throwaway processes, nginx configs, and the two load generators.

Everything here targets 127.0.0.1 only. Every process is started in its own session with a
parent-death signal, registered on an :class:`contextlib.ExitStack`, and stopped when the stack
closes, so a finished run, an error or Ctrl-C leaves nothing behind.

Closed-loop throughput comes from ``wrk`` (keep-alive connections, as many requests as they can
carry). Latency at a fixed rate comes from ``h2load --h1 --rps`` (Debian's nghttp2-client): ``wrk``
has no fixed-rate mode and Debian does not package ``wrk2``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
H2LOAD = shutil.which("h2load") or "/usr/bin/h2load"

# About 100 bytes, the size of a small API answer; fixed so that every stack moves the same bytes.
UPSTREAM_BODY = (
    '{"id":42,"status":"ok","name":"portico-bench","tags":["a","b"],'
    '"updated":"2024-01-01T00:00:00Z"}'
)

_PR_SET_PDEATHSIG = 1


# --- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Runs in the child before exec: a SIGKILLed benchmark must not leave servers running."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(slots=True)
class Server:
    """A process we started that answers HTTP on ``127.0.0.1:port``."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    # The process leads its own session; signal the group so workers a server forked stop too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def start_server(
    stack: contextlib.ExitStack,
    name: str,
    argv: Sequence[str],
    port: int,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
) -> Server:
    """Starts ``argv``, registers its stop on ``stack``, and waits until it answers ``GET /``."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
            # preexec_fn is unsafe only with threads, and the benchmark starts none.
            preexec_fn=_die_with_parent,
        )
    stack.callback(_stop, process)
    server = Server(name, port, process, log)
    wait_until_ready(server, ready_timeout)
    return server


def wait_until_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        connection = http.client.HTTPConnection(HOST, server.port, timeout=2)
        try:
            connection.request("GET", "/")
            status = connection.getresponse().status
            if status == 200:
                return
            last_error = f"status {status}"
        except (OSError, http.client.HTTPException) as error:
            last_error = str(error) or type(error).__name__
        finally:
            connection.close()
        time.sleep(0.1)
    raise RuntimeError(
        f"{server.name} did not answer 200 within {timeout}s ({last_error}):\n{server.log_tail()}"
    )


@contextlib.contextmanager
def bench_session(prefix: str) -> Iterator[tuple[contextlib.ExitStack, Path]]:
    """A temp dir for configs and logs, and an exit stack that stops every process started.

    SIGTERM is turned into the same clean exit as Ctrl-C. The temp dir is kept (and printed) when
    the run fails, because the server logs in it are what explains the failure.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # nginx workers run as another user and read nothing else from here

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    failed = True
    try:
        with contextlib.ExitStack() as stack:
            yield stack, workdir
        failed = False
    except KeyboardInterrupt:
        failed = False
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        if failed:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- nginx -----------------------------------------------------------------------------------

_NGINX_MAIN = """\
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Defaults close a keep-alive connection after 1000 requests; a benchmark would then measure
    # reconnects rather than the steady state.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{body}
}}
"""


def start_upstream(stack: contextlib.ExitStack, workdir: Path, workers: int = 1) -> Server:
    """The fast upstream every stack forwards to: nginx, one worker (unless told), a fixed small
    JSON body."""
    port = free_port()
    body = f"""\
    server {{
        listen {HOST}:{port} reuseport backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{UPSTREAM_BODY}';
        }}
    }}"""
    return _start_nginx(stack, workdir, "upstream", port, body, workers)


def start_nginx_proxy(
    stack: contextlib.ExitStack, workdir: Path, upstream: Server, workers: int = 1
) -> Server:
    """The reference: nginx as a plain reverse proxy, one worker (``workers``: as many as
    ``portico serve --workers``), upstream keep-alive."""
    port = free_port()
    body = f"""\
    upstream backend {{
        server {HOST}:{upstream.port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} reuseport backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return _start_nginx(stack, workdir, "nginx", port, body, workers)


def _start_nginx(
    stack: contextlib.ExitStack, workdir: Path, name: str, port: int, body: str, workers: int = 1
) -> Server:
    directory = workdir / name
    directory.mkdir()
    config = directory / "nginx.conf"
    config.write_text(_NGINX_MAIN.format(dir=directory, body=body, workers=workers))
    argv = [NGINX, "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")]
    return start_server(stack, name, argv, port, workdir)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Throughput:
    """One closed-loop ``wrk`` run."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    """Socket errors plus non-2xx/3xx answers; a run with errors is not a valid figure."""


@dataclass(frozen=True, slots=True)
class FixedRate:
    """One open-rate ``h2load`` run: latency while the offered load stays at ``target_rps``."""

    target_rps: float
    achieved_rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def as_json(value: Any) -> Any:
    if isinstance(value, Throughput | FixedRate | Results):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json(item) for item in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(as_json(payload), indent=2) + "\n")


# --- wrk -------------------------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_TIME = r"([\d.]+)\s*(us|ms|s|m|h)\b"


def parse_duration_ms(text: str) -> float:
    """``'512.34us'``, ``'1.20ms'``, ``'2.00s'``, ``'1.5m'`` -> milliseconds."""
    match = re.fullmatch(_TIME, text.strip())
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_count(text: str) -> float:
    """``'95.00k'``, ``'1.2M'``, ``'950000'`` -> a number."""
    match = re.fullmatch(r"([\d.]+)\s*([kKmMgG]?)", text.strip())
    if match is None:
        raise ValueError(f"not a wrk count: {text!r}")
    return float(match.group(1)) * _COUNT_UNITS[match.group(2).lower()]


def parse_wrk(output: str) -> Throughput:
    """Reads the summary ``wrk --latency`` prints; raises ``ValueError`` when a line is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise ValueError(f"wrk output has no match for {pattern!r}:\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in ([\d.]+\s*(?:us|ms|s|m|h)),")
    rps = find(r"^Requests/sec:\s*([\d.]+\s*[kKmMgG]?)\s*$")
    p50 = find(r"^\s*50(?:\.0+)?%\s+" + _TIME)
    p99 = find(r"^\s*99(?:\.0+)?%\s+" + _TIME)
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors is not None:
        errors += sum(int(value) for value in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx is not None:
        errors += int(non_2xx.group(1))
    return Throughput(
        requests=int(total.group(1)),
        seconds=parse_duration_ms(total.group(2)) / 1e3,
        rps=parse_count(rps.group(1)),
        p50_ms=float(p50.group(1)) * _TIME_UNITS[p50.group(2)],
        p99_ms=float(p99.group(1)) * _TIME_UNITS[p99.group(2)],
        errors=errors,
    )


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> Throughput:
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr}")
    result = parse_wrk(completed.stdout)
    if result.errors:
        progress(f"  {result.errors} errors from {url}:\n{_error_lines(completed.stdout, url)}")
    return result


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_with_cpu(
    url: str,
    pid: int,
    *,
    headers: dict[str, str] | None,
    connections: int,
    seconds: float,
    warmup: float,
    script: Path | None = None,
) -> tuple[Throughput, float]:
    """One wrk run (after an unrecorded warm-up) and the CPU µs per request process ``pid`` spent:
    steadier than requests/s when other work shares the machine."""
    if warmup > 0:
        run_wrk(url, connections=connections, seconds=warmup, headers=headers, script=script)
    before = cpu_seconds(pid)
    result = run_wrk(url, connections=connections, seconds=seconds, headers=headers, script=script)
    used = cpu_seconds(pid) - before
    return result, used / max(1, result.requests) * 1e6


def _error_lines(output: str, url: str) -> str:
    """wrk's error lines, and what one plain request gets now, to show what the errors were."""
    lines = [line for line in output.splitlines() if "errors" in line or "Non-2xx" in line]
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        lines.append(f"  now: {response.status} {response.read(300)!r}")
    except (OSError, http.client.HTTPException) as error:
        lines.append(f"  now: {error!r}")
    finally:
        connection.close()
    return "\n".join(lines)


def measure_throughput(
    url: str, *, connections: int, seconds: float, warmup: float, threads: int = 1
) -> Throughput:
    """A short unrecorded run first: it opens the proxy's upstream connections and warms caches.
    ``threads``: wrk's, one per process of the server (``--workers``), so wrk is not the limit."""
    if warmup > 0:
        run_wrk(url, connections=connections, seconds=warmup, threads=threads)
    return run_wrk(url, connections=connections, seconds=seconds, threads=threads)


# --- h2load at a fixed rate -------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_fixed_rate(
    url: str,
    *,
    rate: float,
    seconds: float,
    warmup: float,
    connections: int,
    workdir: Path,
) -> FixedRate:
    """Offers ``rate`` requests/s over ``connections`` keep-alive HTTP/1.1 connections.

    ``h2load --rps`` paces each connection on its own timer, so the total is ``connections * rps``.
    Started together, the connections would fire in step: ``connections`` requests at once, then
    silence. They are therefore opened one every ``1/rate`` seconds (``-r --rate-period``), which
    staggers their timers and spreads the requests evenly, to within a millisecond. That mode
    counts requests rather than time, so the warm-up is the first ``warmup`` seconds of the same
    run, dropped from the figures.

    h2load's summary has no percentiles; ``--log-file`` gives one row per request (start, status,
    microseconds to the end of the response), from which they are computed here. Latency runs
    from when a request is written, as wrk's does.
    """
    log = workdir / f"h2load-{time.monotonic_ns()}.tsv"
    total = round(rate * (seconds + warmup))
    argv = [
        H2LOAD,
        "--h1",
        "-t1",
        f"-c{connections}",
        f"-n{total}",
        f"--rps={rate / connections:g}",
        # h2load takes whole milliseconds here; above 1,000 requests/s, open several per period.
        f"-r{max(1, round(rate / 1000))}",
        f"--rate-period={max(1, round(1000 / rate))}ms",
        f"--log-file={log}",
        url,
    ]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + warmup + 60, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed ({completed.returncode}): {completed.stderr}")
    rows: list[tuple[int, int, int]] = []
    for line in log.read_text().splitlines():
        columns = line.split("\t")
        if len(columns) >= 3:
            rows.append((int(columns[0]), int(columns[1]), int(columns[2])))
    log.unlink(missing_ok=True)
    if not rows:
        raise RuntimeError(f"h2load logged no request:\n{completed.stdout}")
    measured_from = min(row[0] for row in rows) + warmup * 1e6
    measured = [row for row in rows if row[0] >= measured_from]
    latencies_ms = sorted(elapsed / 1e3 for _, status, elapsed in measured if 200 <= status < 400)
    errors = sum(1 for _, status, _ in measured if not 200 <= status < 400)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", completed.stdout)
    if failed is not None:
        errors += sum(int(value) for value in failed.groups())
    starts = [row[0] for row in measured]
    span_s = (max(starts) - min(starts)) / 1e6 if len(starts) > 1 else 0.0
    return FixedRate(
        target_rps=rate,
        achieved_rps=(len(starts) - 1) / span_s if span_s > 0 else 0.0,
        requests=len(latencies_ms),
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
        max_ms=latencies_ms[-1] if latencies_ms else float("nan"),
        errors=errors,
    )


# --- a whole run ----------------------------------------------------------------------------


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """The options both benchmarks take."""
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument("--connections", type=int, default=50, help="wrk keep-alive connections")
    parser.add_argument("--rate", type=float, default=1000.0, help="fixed rate, requests/s")
    parser.add_argument(
        "--rate-connections", type=int, default=50, help="h2load connections at the fixed rate"
    )
    parser.add_argument("--no-fixed-rate", action="store_true", help="measure throughput only")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every measurement, interleaved; show medians"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")


def parse_only(
    parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]
) -> list[str]:
    """Turns ``--only a,b`` into the chosen names in the canonical order; checks the numbers."""
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = sorted(only - set(names))
    if unknown or not only:
        parser.error(f"--only takes names from {','.join(names)}; unknown: {unknown}")
    if min(args.duration, args.connections, args.rate, args.rate_connections, args.rounds) <= 0:
        parser.error("--duration, --connections, --rate, --rate-connections, --rounds must be > 0")
    return [name for name in names if name in only]


@dataclass(slots=True)
class Results:
    throughput: dict[str, list[Throughput]]
    fixed_rate: dict[str, list[FixedRate]]


def measure(servers: dict[str, Server], args: argparse.Namespace, workdir: Path) -> Results:
    """Every server under wrk, then every server at the fixed rate; rounds interleave the servers
    so that a burst of noise from the shared machine is spread over all of them."""
    results = Results({name: [] for name in servers}, {})
    for number in range(1, args.rounds + 1):
        for name, server in servers.items():
            progress(f"[round {number}/{args.rounds}] wrk -> {name}")
            results.throughput[name].append(
                measure_throughput(
                    server.url,
                    connections=args.connections,
                    seconds=args.duration,
                    warmup=args.warmup,
                    threads=getattr(args, "workers", 1),
                )
            )
    if args.no_fixed_rate:
        return results
    results.fixed_rate = {name: [] for name in servers}
    for number in range(1, args.rounds + 1):
        for name, server in servers.items():
            progress(f"[round {number}/{args.rounds}] {args.rate:g} req/s -> {name}")
            results.fixed_rate[name].append(
                run_fixed_rate(
                    server.url,
                    rate=args.rate,
                    seconds=args.duration,
                    warmup=args.warmup,
                    connections=args.rate_connections,
                    workdir=workdir,
                )
            )
    return results


def median_throughput(runs: Sequence[Throughput]) -> Throughput:
    return Throughput(
        requests=round(statistics.median(run.requests for run in runs)),
        seconds=statistics.median(run.seconds for run in runs),
        rps=statistics.median(run.rps for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        errors=sum(run.errors for run in runs),
    )


def median_fixed_rate(runs: Sequence[FixedRate]) -> FixedRate:
    return FixedRate(
        target_rps=runs[0].target_rps,
        achieved_rps=statistics.median(run.achieved_rps for run in runs),
        requests=sum(run.requests for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        max_ms=max(run.max_ms for run in runs),
        errors=sum(run.errors for run in runs),
    )


# --- output ----------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, so that what a run prints can be pasted into docs/benchmarks.md."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def spread(values: Sequence[float], render: Callable[[float], str]) -> str:
    """``'12,345'`` for one round, ``'12,345 (11,900-12,800)'`` (median, min-max) for several."""
    middle = render(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} ({render(min(values))}-{render(max(values))})"


def fmt_achieved(run: FixedRate) -> str:
    """Below the offered rate the stack is saturated and h2load queues behind it: the latency
    figures then describe an overload, not the fixed rate."""
    text = fmt_rps(run.achieved_rps)
    return text + " (saturated)" if run.achieved_rps < 0.95 * run.target_rps else text


def fmt_ms(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def fmt_rps(value: float) -> str:
    return f"{value:,.0f}"


def revision(root: Path) -> str:
    """The commit measured, and whether ``src/`` had uncommitted changes at the time."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    described = f"{head} (src/ has uncommitted changes)" if dirty else head
    return f"{described}, gateway code {native_status(root)}"


def native_status(root: Path) -> str:
    """Whether the Portico measured runs its compiled hot path (``portico._native.status()``)."""
    python = root / ".venv" / "bin" / "python"
    try:
        return subprocess.run(
            [str(python), "-c", "import portico._native as n; print(n.status())"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_summary() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"


def check_tools(*tools: str) -> None:
    missing = [tool for tool in tools if not (os.access(tool, os.X_OK))]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: run `bash scripts/ensure-system-packages.sh bench`"
        )


def run(main: Callable[[], int]) -> None:
    """The scripts' entry point: Ctrl-C (or SIGTERM) ends the run quietly with status 130."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        status = 130
    sys.exit(status)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_redis(stack: contextlib.ExitStack, workdir: Path) -> int:
    """A throwaway redis-server (no persistence); its port once it answers PING."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    argv = [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly",
            "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    stack.callback(process.terminate)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on {port}")
