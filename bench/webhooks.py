"""Webhook delivery: sustained deliveries/s from publish to a 2xx at a local receiver, and the time
from publish to first attempt at a fixed rate, on SQLite and on PostgreSQL, beside the ceiling.

For each backend (a SQLite file; a throwaway PostgreSQL cluster started as the tests start it):

- **throughput**: ``--events`` events are published (each to ``--endpoints`` endpoints, so
  ``events x endpoints`` deliveries) from this process with the ``Publisher`` (its rate is
  shown), then ``--workers`` ``portico serve --role worker`` processes are started on that
  backlog and deliver it to an nginx answering ``200``. The figure is the rate at which
  deliveries turn ``succeeded`` in the store, from 10 % to 90 % of them (start-up and tail left
  out); the workers' CPU time per delivery comes from ``/proc``. Publishing first keeps the
  publisher's CPU out of the delivery figure: on two cores they would share it.
- **latency**: events published at a fixed ``--rate`` for ``--seconds`` to one endpoint while the
  workers run (new ones, started before); for each delivery, its first attempt's start minus its
  publishing time, as the store records them (``first_attempt_at - published_at``): p50, p99,
  max. The publishers are an open loop, as real ones are: ``--publishers`` processes of
  ``--publish-threads`` threads, event ``n`` due at ``n / rate`` and published by whichever
  thread is free then, so a publish waiting on its commit does not hold the next one back. The
  rate they reached is shown beside it (on a busy machine they may fall short of ``--rate``),
  with what one publish took (wall time and CPU) and how late the p99 publish started. The
  workers poll every ``--poll`` (``events.delivery.poll_interval``); on PostgreSQL a publish
  in another process wakes them at once (NOTIFY), on SQLite it does not. A low ``--rate``
  (20) with the default ``--poll 250ms`` shows the difference: at 500 events/s the workers are
  rarely idle long enough to poll.

The reference, in the same run: the same signed POSTs sent by Portico's ``Sender`` (aiohttp,
the same connection limit) straight to the same nginx with no queue and no store, as fast as it
goes: the ceiling of one process sending.

The issue's targets on this machine: >= 2,000 deliveries/s on PostgreSQL, and p99 publish to
first attempt <= 250 ms at 500 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import harness
import sqlalchemy as sa
import uvloop
import yaml
from harness import progress, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' throwaway PostgreSQL cluster

from tests.support.postgres import running_cluster  # noqa: E402

from portico.config.model import PorticoConfig  # noqa: E402
from portico.events.publishing import envelope_bytes, new_event_id  # noqa: E402
from portico.events.sender import Sender  # noqa: E402
from portico.events.service import Events  # noqa: E402
from portico.events.signing import Signer, webhook_headers  # noqa: E402
from portico.events.ssrf import Destinations  # noqa: E402
from portico.store.database import Database  # noqa: E402
from portico.store.migrate import upgrade  # noqa: E402
from portico.store.secrets import ENVIRONMENT_VARIABLE, Secrets  # noqa: E402
from portico.store.secrets.keys import MasterKeys, generate_key_text, parse_key  # noqa: E402
from portico.store.secrets.sources import FixedKeys  # noqa: E402
from portico.store.tables import DeliveryRow  # noqa: E402

PORTICO = ROOT / ".venv" / "bin" / "portico"
BACKENDS = ("sqlite", "postgresql")
THROUGHPUT_BAR = 2000.0
LATENCY_BAR_MS = 250.0
TYPES = {"order.created": {"description": "An order was placed."}}
TENANTS = {"bench": {"consumers": {"load": {}}}}
_D: sa.Table = DeliveryRow.__table__  # type: ignore[assignment]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--events", type=int, default=5000, help="events of the throughput run")
    parser.add_argument("--endpoints", type=int, default=4, help="endpoints each event goes to")
    parser.add_argument(
        "--workers", default="sqlite=1,postgresql=3", help="worker processes per backend"
    )
    parser.add_argument("--publishers", type=int, default=4, help="publishing processes")
    parser.add_argument(
        "--publish-threads",
        type=int,
        default=4,
        help="threads per publishing process in the latency run (an open loop)",
    )
    parser.add_argument("--rate", type=float, default=500.0, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--poll", default="50ms", help="events.delivery.poll_interval")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--portico", type=Path, default=PORTICO, help="the portico executable")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy: profile the first worker of the throughput run with it, into "
        "worker-profile-BACKEND.txt (collapsed stacks)",
    )
    args = parser.parse_args(argv)
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not args.backends or any(name not in BACKENDS for name in args.backends):
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}")
    counts = dict(item.split("=", 1) for item in args.workers.split(","))
    args.workers = {name: int(counts.get(name, 1)) for name in BACKENDS}
    return args


# --- the store and the workers ------------------------------------------------------------------


@contextlib.contextmanager
def database_for(backend: str, workdir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'portico.db'}"
        return
    with running_cluster() as cluster:
        yield cluster.create_database("bench")


def delivery_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "allow_http": True,
        "allow_networks": ["127.0.0.0/8"],
        "schedule": ["0s", "1s", "5s"],
        "jitter": 0,
        "poll_interval": args.poll,
    }


@dataclass
class Store:
    url: str
    database: Database
    events: Events
    key: str
    config_path: Path
    backend: str


def open_store(url: str, workdir: Path, args: argparse.Namespace) -> Store:
    upgrade(url)
    key = generate_key_text()
    secrets = secrets_of(key)
    settings = {"types": TYPES, "delivery": delivery_settings(args)}
    config = PorticoConfig.model_validate({"tenants": TENANTS, "events": settings})
    database = Database(url)
    config_path = workdir / "portico.yaml"
    config_path.write_text(
        yaml.safe_dump({"database": {"url": url}, "tenants": TENANTS, "events": settings})
    )
    backend = database.backend
    return Store(
        url, database, Events(database, secrets, lambda: config), key, config_path, backend
    )


def secrets_of(key: str) -> Secrets:
    return Secrets(FixedKeys(MasterKeys.of([parse_key(key)], "the benchmark's key")))


class Workers:
    started = 0

    def __init__(self, store: Store, count: int, workdir: Path, portico: Path) -> None:
        env = {**os.environ, ENVIRONMENT_VARIABLE: store.key}
        self.processes: list[subprocess.Popen[bytes]] = []
        Workers.started += 1
        self.logs = [workdir / f"worker-{Workers.started}-{n}.log" for n in range(count)]
        for log_path in self.logs:
            log = log_path.open("wb")
            self.processes.append(
                subprocess.Popen(
                    [str(portico), "serve", "--role", "worker", "-c", str(store.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                    start_new_session=True,
                )
            )
            log.close()
        deadline = time.monotonic() + 60
        while not all(b"delivery worker on" in log.read_bytes() for log in self.logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                raise RuntimeError("a worker did not start:\n" + self.log_tail())
            time.sleep(0.05)

    def cpu(self) -> float:
        return sum(harness.cpu_seconds(process.pid) for process in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def log_tail(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-2000:] for log in self.logs)


def succeeded(database: Database, since_id: int) -> tuple[int, int]:
    """Deliveries after ``since_id``: how many succeeded, and how many there are."""
    with database.read() as session:
        done, total = session.execute(
            sa.select(sa.func.count().filter(_D.c.status == "succeeded"), sa.func.count()).where(
                _D.c.id > since_id
            )
        ).one()
    return int(done), int(total)


def last_delivery_id(database: Database) -> int:
    with database.read() as session:
        return int(session.scalar(sa.select(sa.func.coalesce(sa.func.max(_D.c.id), 0))) or 0)


# --- the runs -----------------------------------------------------------------------------------


@dataclass
class ThroughputRun:
    deliveries: int
    published_per_s: float
    """Events published per second while the workers delivered."""
    deliveries_per_s: float
    cpu_ms_per_delivery: float
    seconds: float


@dataclass
class Publishing:
    """What the publishing processes did."""

    per_s: float
    """Events published per second, from the common start to the last publish."""
    wall_ms: float
    """Mean time one ``publish`` call took, start to return (its transaction's commit)."""
    cpu_ms: float
    """The publishing processes' CPU per publish (every thread, from ``/proc``)."""
    late_p99_ms: float
    """At a fixed rate: p99 of how late a publish started after its scheduled moment."""


def publish(
    store: Store, count: int, processes: int, rate: float | None = None, threads: int = 1
) -> Publishing:
    """Publish ``count`` events from ``processes`` processes of ``threads`` threads each (at
    ``rate`` events/s overall, or as fast as they go), each process with its own ``Publisher``
    and connections, as gateway processes publish. Processes rather than threads for the CPU:
    one process's interpreter lock would cap the rate the run asks for; threads within each for
    an open loop: event ``n`` is due at ``n / rate``, and a thread free then publishes it even
    while others wait on their commits."""
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(processes + 1)
    results: multiprocessing.Queue[tuple[float, str | None, float, list[float], list[float]]] = (
        context.Queue()
    )
    running = [
        context.Process(
            target=publish_share,
            args=(store.url, store.key, part, processes, count, rate, threads, ready, results),
        )
        for part in range(processes)
    ]
    for process in running:
        process.start()
    ready.wait(timeout=120)  # every publisher connected: they start together
    started = time.monotonic()
    outcomes = [results.get(timeout=600) for _ in running]
    elapsed = time.monotonic() - started
    for process in running:
        process.join(30)
    failed = [error for _, error, _, _, _ in outcomes if error is not None]
    if failed:
        raise RuntimeError(f"a publisher failed: {failed[0]}")
    walls = [wall for _, _, _, share, _ in outcomes for wall in share]
    late = sorted(delay for _, _, _, _, share in outcomes for delay in share)
    return Publishing(
        count / elapsed,
        1000 * sum(walls) / max(len(walls), 1),
        1000 * sum(cpu for _, _, cpu, _, _ in outcomes) / count,
        1000 * harness.percentile(late, 0.99) if late else 0.0,
    )


def publish_share(
    url: str,
    key: str,
    part: int,
    parts: int,
    count: int,
    rate: float | None,
    threads: int,
    ready: Any,
    results: Any,
) -> None:
    """One publishing process: events ``part, part + parts, ...`` of ``count``, by ``threads``
    threads taking them in turn."""
    config = PorticoConfig.model_validate({"tenants": TENANTS, "events": {"types": TYPES}})
    database = Database(url)
    events = Events(database, secrets_of(key), lambda: config)
    numbers = iter(range(part, count, parts))
    taking = threading.Lock()
    walls: list[float] = []
    late: list[float] = []
    errors: list[str] = []
    started = 0.0

    def publishing() -> None:
        try:
            while True:
                with taking:
                    n = next(numbers, None)
                if n is None or errors:
                    return
                if rate is not None:
                    wait = started + n / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    late.append(max(-wait, 0.0))
                before = time.perf_counter()
                events.publisher.publish(
                    "order.created", {"order_id": f"o{n}", "n": n}, publisher="admin:bench"
                )
                walls.append(time.perf_counter() - before)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    cpu = 0.0
    try:
        with database.read() as session:  # connected before the start
            session.execute(sa.text("SELECT 1"))
        workers = [threading.Thread(target=publishing) for _ in range(threads)]
        ready.wait(timeout=120)
        cpu_before = harness.cpu_seconds(os.getpid())
        started = time.monotonic()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        cpu = harness.cpu_seconds(os.getpid()) - cpu_before
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        database.dispose()
    results.put((time.monotonic(), errors[0] if errors else None, cpu, walls, late))


def throughput(store: Store, args: argparse.Namespace, workdir: Path) -> ThroughputRun:
    """The backlog published first, then the workers started on it: how fast they drain it."""
    since = last_delivery_id(store.database)
    total = args.events * args.endpoints
    published = publish(store, args.events, args.publishers).per_s
    workers = Workers(store, args.workers[store.backend], workdir, args.portico)
    profiler = None
    if args.profile is not None:
        profiler = subprocess.Popen(
            [str(args.profile), "record", "--format", "raw", "--nonblocking", "--threads",
             "-o", f"worker-profile-{store.backend}.txt", "-p", str(workers.processes[0].pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    samples: list[tuple[float, int]] = []
    cpu_before = workers.cpu()
    try:
        deadline = time.monotonic() + 600
        while (done := succeeded(store.database, since)[0]) < total:
            samples.append((time.monotonic(), done))
            if time.monotonic() > deadline:
                raise RuntimeError("the deliveries did not finish:\n" + workers.log_tail())
            time.sleep(0.1)
        samples.append((time.monotonic(), total))
        cpu = workers.cpu() - cpu_before
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        workers.stop()
    low = next(s for s in samples if s[1] >= 0.1 * total)
    high = next(s for s in samples if s[1] >= 0.9 * total)
    rate = (high[1] - low[1]) / max(high[0] - low[0], 1e-9)
    return ThroughputRun(total, published, rate, 1000 * cpu / total, samples[-1][0] - samples[0][0])


@dataclass
class LatencyRun:
    events: int
    achieved_per_s: float
    publish_wall_ms: float
    """Mean time a publish took (start to commit) during the run."""
    publish_cpu_ms: float
    """The publishing processes' CPU per publish during the run."""
    publish_late_p99_ms: float
    """p99 of how late publishes started after their scheduled moment."""
    p50_ms: float
    p99_ms: float
    max_ms: float


def latency(store: Store, args: argparse.Namespace) -> LatencyRun:
    since = last_delivery_id(store.database)
    count = int(args.rate * args.seconds)
    publishing = publish(store, count, args.publishers, args.rate, args.publish_threads)
    deadline = time.monotonic() + 120
    while succeeded(store.database, since) != (count, count):
        if time.monotonic() > deadline:
            raise RuntimeError("the deliveries of the latency run did not finish")
        time.sleep(0.1)
    with store.database.read() as session:
        delays = sorted(
            1000 * (first - published)
            for first, published in session.execute(
                sa.select(_D.c.first_attempt_at, _D.c.published_at).where(_D.c.id > since)
            )
        )
    return LatencyRun(
        count,
        publishing.per_s,
        publishing.wall_ms,
        publishing.cpu_ms,
        publishing.late_p99_ms,
        harness.percentile(delays, 0.5),
        harness.percentile(delays, 0.99),
        delays[-1],
    )


def reference(url: str, deliveries: int, connections: int) -> float:
    """The ceiling: the Sender posting signed webhooks straight to the receiver, no queue."""

    async def run() -> float:
        sender = Sender(
            Destinations(allow_http=True, allow_networks=("127.0.0.0/8",)),
            None,
            max_connections=connections,
        )
        signer = Signer.from_secret(
            "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the spec's example secret
        )
        body = envelope_bytes("order.created", __import__("datetime").datetime.now(), {"n": 1})
        queue = list(range(deliveries))

        async def one_sender() -> None:
            while queue:
                queue.pop()
                data = body.encode()
                headers = webhook_headers(new_event_id(), int(time.time()), data, [signer])
                headers.append(("content-type", "application/json"))
                result = await sender.send(url, headers, data, 15.0)
                if result.status != 200:
                    raise RuntimeError(f"the receiver answered {result.status} {result.error}")

        started = time.monotonic()
        await asyncio.gather(*(one_sender() for _ in range(connections)))
        elapsed = time.monotonic() - started
        await sender.close()
        return deliveries / elapsed

    return uvloop.run(run())


# --- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.check_tools(harness.NGINX)
    if not args.portico.exists():
        raise SystemExit(f"{args.portico} not found: run `make install` first")
    load_before = harness.machine_summary()
    results: dict[str, Any] = {}
    rows = []
    with harness.bench_session("portico-bench-webhooks-") as (stack, workdir):
        receiver = harness.start_upstream(stack, workdir)
        url = f"http://{harness.HOST}:{receiver.port}/hooks"
        max_in_flight = 256
        progress("reference: the Sender straight to nginx")
        ceiling = reference(url, args.events * args.endpoints, max_in_flight)
        rows.append(["reference (Sender, no queue)", "-", f"{ceiling:,.0f}", "-", "-", "-"])
        results["reference_per_s"] = ceiling
        for backend in args.backends:
            backend_dir = workdir / backend
            backend_dir.mkdir()
            backend_dir.chmod(0o755)
            with database_for(backend, backend_dir) as database_url:
                store = open_store(database_url, backend_dir, args)
                for number in range(args.endpoints):
                    store.events.endpoints.create("bench/load", f"{url}/{number}")
                count = args.workers[backend]
                progress(f"{backend}: {count} worker(s), {args.events} events x {args.endpoints}")
                try:
                    run = throughput(store, args, backend_dir)
                    progress(f"{backend}: {args.rate:g} events/s for {args.seconds:g} s")
                    # The latency run goes to one endpoint: the others are disabled.
                    for endpoint in store.events.endpoints.list(limit=100)[1:]:
                        store.events.endpoints.set_disabled(endpoint.id, "latency run")
                    workers = Workers(store, count, backend_dir, args.portico)
                    try:
                        timing = latency(store, args)
                    finally:
                        workers.stop()
                finally:
                    store.database.dispose()
            results[backend] = {
                "throughput": asdict(run),
                "latency": asdict(timing),
                "workers": count,
            }
            rows.append(
                [
                    f"{backend}, {count} worker(s)",
                    f"{run.published_per_s:,.0f}",
                    f"{run.deliveries_per_s:,.0f}",
                    f"{100 * run.deliveries_per_s / ceiling:.0f}%",
                    f"{run.cpu_ms_per_delivery:.2f}",
                    f"{timing.p50_ms:.1f} / {timing.p99_ms:.1f} / {timing.max_ms:.1f} "
                    f"({timing.achieved_per_s:.0f} ev/s)",
                ]
            )
    revision = harness.revision(ROOT)
    print(f"\nPortico {revision}; machine: {load_before}")
    print(
        f"throughput: {args.events} events x {args.endpoints} endpoints published, then "
        f"delivered to nginx by the workers; latency: {args.rate:g} events/s for "
        f"{args.seconds:g} s to one endpoint; poll_interval {args.poll}\n"
    )
    print(
        table(
            [
                "",
                "publishing events/s",
                "deliveries/s",
                "of reference",
                "worker CPU ms/delivery",
                "publish to 1st attempt p50 / p99 / max ms",
            ],
            rows,
        )
    )
    for backend in args.backends:
        run, timing = results[backend]["throughput"], results[backend]["latency"]
        if backend == "postgresql":
            verdict = "meets" if run["deliveries_per_s"] >= THROUGHPUT_BAR else "BELOW"
            print(f"\npostgresql: {verdict} the {THROUGHPUT_BAR:,.0f} deliveries/s target")
        print(
            f"{backend}: the latency run's publishers ({args.publishers} processes x "
            f"{args.publish_threads} threads): {timing['achieved_per_s']:.0f} of "
            f"{args.rate:g} events/s offered; a publish took {timing['publish_wall_ms']:.1f} ms "
            f"(CPU {timing['publish_cpu_ms']:.2f} ms); p99 start behind schedule "
            f"{timing['publish_late_p99_ms']:.1f} ms"
        )
        verdict = "meets" if timing["p99_ms"] <= LATENCY_BAR_MS else "ABOVE"
        print(f"{backend}: p99 {verdict} the {LATENCY_BAR_MS:g} ms target", end="")
        if timing["achieved_per_s"] < 0.95 * args.rate:
            print(
                f", at the {timing['achieved_per_s']:.0f} events/s the publishers achieved, "
                f"not the {args.rate:g} asked: no verdict on the target's rate"
            )
        else:
            print()
    if args.json is not None:
        harness.write_json(
            args.json,
            {"portico": revision, "machine_before": load_before, "settings": vars(args), **results},
        )
    return 0


if __name__ == "__main__":
    harness.run(main)
