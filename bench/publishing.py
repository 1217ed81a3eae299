"""What one ``Publisher.publish`` costs the publishing process: CPU and instructions per event,
this tree beside another commit, on SQLite and on PostgreSQL.

Every way an event comes in (the consumer API's ``POST /webhooks/v1/events``, the ``publish``
route policy, the admin API, inbound webhooks) pays this per event, on the gateway's cores. For
each backend (a SQLite file; a throwaway PostgreSQL cluster started as the tests start it), the
store is migrated by this tree and given ``--endpoints`` endpoints subscribed to
``order.created``, one more whose payload filter refuses the events and one subscribed to another
type. Then, for each tree, a child process builds the events capability as a gateway process
does and publishes ``--events`` events one after the other (each to the subscribed endpoints,
with a JSON Schema to check); the trees take turns, ``--rounds`` times:

- **CPU µs/publish**: the child's user+system CPU over the loop (after a warm-up), median and
  min of the rounds. On PostgreSQL the server's CPU for the same loop (its backend's, from
  ``/proc``) is shown beside it: on two cores it is taken from the same machine.
- **instructions/publish** (``--instructions``): the child under ``valgrind --tool=callgrind``,
  run twice with a different number of events, so that start-up cancels out: what the machine's
  load cannot blur (the publishing process only; system calls and the server not counted).

    .venv/bin/python bench/publishing.py                                  # this tree
    git archive 7906519 src | tar -x -C /tmp/base-7906519                 # another commit's code
    .venv/bin/python bench/publishing.py --baseline /tmp/base-7906519 --instructions

``--profile`` prints cProfile's view of this tree's loop on each backend.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
TYPES = {
    "order.created": {
        "description": "An order was placed.",
        "schema": {
            "type": "object",
            "required": ["order_id", "n"],
            "properties": {"order_id": {"type": "string"}, "n": {"type": "integer"}},
        },
    },
    "invoice.paid": {"description": "An invoice was paid."},
}
TENANTS = {"bench": {"consumers": {"load": {}}}}
WARM_UP = 300


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--events", type=int, default=2000, help="events per round")
    parser.add_argument("--endpoints", type=int, default=4, help="endpoints each event goes to")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per tree, interleaved")
    parser.add_argument("--baseline", type=Path, help="another tree's folder (its src/ is used)")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions with callgrind"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile this tree's loop")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "KEY", "EVENTS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if not args.backends or any(name not in BACKENDS for name in args.backends):
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}")
    return args


# --- the child: one tree's publishing loop ------------------------------------------------------


def child(url: str, key: str, events: int, profile: bool) -> None:
    """Publish ``WARM_UP`` then ``events`` events; print the loop's CPU as JSON. Imports
    whichever ``portico`` is first on the path (this tree's, or the baseline's)."""
    from portico.config.model import PorticoConfig
    from portico.events.service import Events
    from portico.store.database import Database
    from portico.store.secrets import Secrets
    from portico.store.secrets.keys import MasterKeys, parse_key
    from portico.store.secrets.sources import FixedKeys

    config = PorticoConfig.model_validate({"tenants": TENANTS, "events": {"types": TYPES}})
    database = Database(url)
    secrets = Secrets(FixedKeys(MasterKeys.of([parse_key(key)], "the benchmark's key")))
    publish = Events(database, secrets, lambda: config).publisher.publish
    for n in range(WARM_UP):
        publish("order.created", {"order_id": f"w{n}", "n": n}, publisher="admin:bench")
    server = _server_pids(database)
    server_before = sum(_cpu_seconds(pid) for pid in server)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    for n in range(events):
        publish("order.created", {"order_id": f"o{n}", "n": n}, publisher="admin:bench")
    cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
    server_cpu = sum(_cpu_seconds(pid) for pid in server) - server_before
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    database.dispose()
    print(
        json.dumps(
            {
                "cpu_us": 1e6 * cpu / events,
                "wall_us": 1e6 * wall / events,
                "server_cpu_us": 1e6 * server_cpu / events if server else None,
            }
        )
    )


def _server_pids(database: Any) -> list[int]:
    """The PostgreSQL backends serving this process (readable in /proc when the cluster is
    local), or none on SQLite."""
    if database.backend != "postgresql":
        return []
    import sqlalchemy as sa

    with database.engine.connect() as connection:
        pids = connection.scalars(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = '' AND backend_type = 'client backend'"
            )
        ).all()
    return [int(pid) for pid in pids if Path(f"/proc/{pid}/stat").exists()]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the parent ---------------------------------------------------------------------------------


@contextlib.contextmanager
def store_for(backend: str, workdir: Path, endpoints: int) -> Iterator[tuple[str, str]]:
    """A migrated store with the endpoints, and its secrets key text."""
    sys.path.insert(0, str(ROOT))  # the tests' throwaway PostgreSQL cluster
    from tests.support.postgres import running_cluster

    from portico.config.model import PorticoConfig
    from portico.events.service import Events
    from portico.store.database import Database
    from portico.store.migrate import upgrade
    from portico.store.secrets import Secrets
    from portico.store.secrets.keys import MasterKeys, generate_key_text, parse_key
    from portico.store.secrets.sources import FixedKeys

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{workdir / 'portico.db'}"
        else:
            url = stack.enter_context(running_cluster()).create_database("bench")
        upgrade(url)
        key = generate_key_text()
        secrets = Secrets(FixedKeys(MasterKeys.of([parse_key(key)], "the benchmark's key")))
        config = PorticoConfig.model_validate({"tenants": TENANTS, "events": {"types": TYPES}})
        database = Database(url)
        events = Events(database, secrets, lambda: config)
        for number in range(endpoints):
            events.endpoints.create("bench/load", f"https://hooks.example/{number}")
        events.endpoints.create(
            "bench/load", "https://hooks.example/big", filter={"data.n": {"gte": 10**9}}
        )
        events.endpoints.create("bench/load", "https://hooks.example/inv", types=["invoice.*"])
        database.dispose()
        yield url, key


def run_child(
    tree: Path, url: str, key: str, events: int, *, valgrind: Path | None = None, profile: bool
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONHASHSEED": "0"}
    command = [sys.executable, __file__, "--child", url, key, str(events)]
    if profile:
        command.append("--child-profile")
    if valgrind is not None:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={valgrind}", *command]
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the publishing child failed:\n{done.stderr[-3000:]}")
    if profile:
        print(done.stderr, file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def instructions(tree: Path, url: str, key: str, events: int) -> float:
    """Instructions per publish: two callgrind runs, ``events`` apart."""
    totals = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (events // 4, events // 4 + events):
            out = Path(tmp) / f"callgrind-{count}.out"
            run_child(tree, url, key, count, valgrind=out, profile=False)
            for line in out.read_text().splitlines():
                if line.startswith(("summary:", "totals:")):
                    totals.append(int(line.split()[1]))
                    break
    return (totals[1] - totals[0]) / events


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        url, key, events = args.child
        child(url, key, int(events), args.child_profile)
        return 0
    trees = {"this tree": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    lines = []
    for backend in args.backends:
        with (
            tempfile.TemporaryDirectory() as tmp,
            store_for(backend, Path(tmp), args.endpoints) as (url, key),
        ):
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for round_number in range(args.rounds):
                for name, tree in trees.items():
                    profile = args.profile and name == "this tree" and round_number == 0
                    runs[name].append(run_child(tree, url, key, args.events, profile=profile))
                    print(f"{backend}, {name}, round {round_number + 1}: {runs[name][-1]}",
                          file=sys.stderr)  # fmt: skip
            for name, tree in trees.items():
                cpu = sorted(run["cpu_us"] for run in runs[name])
                server = sorted(run["server_cpu_us"] or 0.0 for run in runs[name])
                wall = sorted(run["wall_us"] for run in runs[name])
                counted = (
                    instructions(tree, url, key, max(200, args.events // 4))
                    if args.instructions
                    else None
                )
                results.setdefault(backend, {})[name] = {
                    "runs": runs[name],
                    "cpu_us_median": statistics.median(cpu),
                    "cpu_us_min": cpu[0],
                    "server_cpu_us_median": statistics.median(server),
                    "wall_us_median": statistics.median(wall),
                    "instructions": counted,
                }
                server_cell = f"{statistics.median(server):,.0f}" if server[-1] else "-"
                counted_cell = f"{counted / 1e3:,.0f} k" if counted is not None else "-"
                lines.append(
                    f"| {backend} | {name} | {statistics.median(cpu):,.0f} ({cpu[0]:,.0f}) | "
                    f"{server_cell} | {statistics.median(wall):,.0f} | {counted_cell} |"
                )
    load_after = os.getloadavg()
    print(
        f"\n{args.events} events a round, {args.rounds} rounds, {args.endpoints} subscribed "
        f"endpoints (+2 not taking the event); load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after\n"
    )
    print(
        "| backend | tree | CPU µs/publish, median (min) | server CPU µs/publish | "
        "wall µs/publish | instructions/publish |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
