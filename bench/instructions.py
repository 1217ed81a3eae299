"""Instructions per request on the gateway's request path, counted by callgrind: an A/B that the
machine's load cannot blur.

Timings on a shared machine move by 10% from one minute to the next; instruction counts do not.
This feeds requests and responses straight into a ``ClientConnection`` and a pooled
``UpstreamConnection`` with in-memory transports (no sockets, no event loop wake-ups): the
routing, policies, head building and relaying Portico does per request, and nothing else. Each
count is run twice under ``valgrind --tool=callgrind`` with a different number of requests, so
the import and start-up cost cancels out::

    .venv/bin/python bench/instructions.py                          # this tree
    .venv/bin/python bench/instructions.py --baseline /tmp/portico-baseline-757cdb0

``--baseline`` is a checkout prepared by ``bench/baseline.py`` (its ``src`` goes first on the
path, with its own compiled modules). Paths: ``/items/42`` (the common case: nothing to decode)
and ``/items/caf%C3%A9%20x`` (percent-decoding and canonical re-encoding).

``--policy validation`` (or ``rate-limit``, ``auth``...) measures a POST of a small JSON order to
a route with that policy against the same POST to a route without it instead: what the policy
costs per request (the rate limit counts in the process's memory; Redis is not in the loop)::

    .venv/bin/python bench/instructions.py --policy validation
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """\
gateway: {listen: "127.0.0.1:0"}
%(operations)sservices:
  backend: {targets: ["http://127.0.0.1:9"], retries: 0}
routes:
  - name: items
    match: {path: "/items/{id}", methods: [GET]}
    service: backend
  - name: all
    match: {path: "/{rest:path}"}
    service: backend
"""
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n"
    b'date: Wed, 02 Dec 2026 07:00:00 GMT\r\n\r\n{"ok": true}\n'
)


class Sink:
    """A transport that keeps nothing: what the gateway writes costs only the call."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self._peer = peer
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


POLICY_CONFIG = """\
gateway: {listen: "127.0.0.1:0"}
operations: {enabled: false, metrics: true}
services:
  backend: {targets: ["http://127.0.0.1:9"], retries: 0, openapi: %(document)s}
tenants: {bench: {consumers: {load: {api_keys: [{id: %(key_id)s, sha256: %(sha256)s}]}}}}
routes:
  - name: orders
    match: {path: "/orders"}
    service: backend
    policies: [%(policies)s]
"""
POLICIES = {
    "none": "",
    "auth": "{type: auth, methods: [api_key]}",
    "rate-limit": "{type: rate-limit, limits: [{name: b, limit: 10000000, window: 1m}]}",
    "validation": "{type: validation}",
    "all": "{type: auth, methods: [api_key]}, "
    "{type: rate-limit, limits: [{name: b, limit: 10000000, window: 1m}]}, {type: validation}",
}
REDIS_POLICIES = ("rate-limit", "all")
"""Measured a second time with their counters in a real Redis (``NAME-redis``): with leases, a
busy key asks Redis once per lease, so what is counted is mostly the gateway's own work."""
ORDER = b'{"sku": "A-1001", "quantity": 2, "note": "leave at the door"}'

OPERATIONS = {
    "on": "operations: {enabled: false, metrics: true}\n",
    "off": "operations: {enabled: false, metrics: false}\n",
    "absent": "",  # a commit older than the operations listener
}


def _wired(gateway: Any, runtime: Any, client_type: Any, upstream_type: Any) -> tuple[Any, Any]:
    """A client connection to ``gateway`` and one pooled upstream connection to its backend,
    both on transports that keep nothing. The types are passed in: a baseline's own (its modules
    moved between commits)."""
    loop = asyncio.get_running_loop()
    target = runtime.services["backend"].targets[0]
    upstream = upstream_type(target, loop)
    upstream.connection_made(Sink(("127.0.0.1", 9)))
    target.pool._loop = loop
    target.pool.active = 1
    target.pool.release(upstream, True)
    client = client_type(gateway)
    client.connection_made(Sink(("127.0.0.1", 40000)))
    return client, upstream


def _check_reused(upstream: Any) -> None:
    if upstream.target.pool.take_idle() is not upstream:
        raise SystemExit("the upstream connection was not reused: the loop measured an error")


async def serve(requests: int, path: str, metrics: str) -> None:
    try:
        from portico.assembly import build_runtime, load_config
    except ImportError:  # a baseline from before the composition root (757cdb0 and older)
        from portico.runtime import build_runtime  # type: ignore[no-redef]

        from portico.config.loader import load_config  # type: ignore[no-redef]
    from portico.gateway.app import Gateway

    try:
        from portico.gateway.connection import ClientConnection
    except ImportError:  # a baseline from before server.py was split (f2c9d17 and older)
        from portico.gateway.server import ClientConnection  # type: ignore[no-redef]
    from portico.gateway.upstream import UpstreamConnection

    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "portico.yaml"
        config.write_text(CONFIG % {"operations": OPERATIONS[metrics]})
        runtime = build_runtime(load_config(config))
    client, upstream = _wired(Gateway(runtime), runtime, ClientConnection, UpstreamConnection)
    request = f"GET {path} HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n\r\n".encode()
    for _ in range(requests):
        client.data_received(request)
        upstream.data_received(RESPONSE)
    _check_reused(upstream)


async def serve_policy(requests: int, policy: str) -> None:
    """POSTs of a small JSON order to a route with ``policy`` (``none``: no policy; a name
    ending in ``-redis``: the counters in the Redis of ``$PORTICO_BENCH_REDIS``)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from policies import OPENAPI  # bench/policies.py: the same document and order
    from portico.assembly import build_runtime, load_config
    from portico.gateway.app import Gateway
    from portico.gateway.connection import ClientConnection
    from portico.gateway.upstream import UpstreamConnection
    from portico.identity.apikeys import generate_key
    from portico.identity.context import Extensions
    from portico.shared.redis import RedisState

    extensions = Extensions()
    if policy.endswith("-redis"):
        policy = policy.removesuffix("-redis")
        extensions = Extensions(shared=RedisState(os.environ["PORTICO_BENCH_REDIS"], timeout=5.0))
    key = generate_key()
    with tempfile.TemporaryDirectory() as tmp:
        document = Path(tmp) / "orders.yaml"
        document.write_text(OPENAPI)
        config = Path(tmp) / "portico.yaml"
        settings = {"document": document, "key_id": key.id, "sha256": key.sha256}
        config.write_text(POLICY_CONFIG % {**settings, "policies": POLICIES[policy]})
        runtime = build_runtime(load_config(config), extensions=extensions)
    client, upstream = _wired(Gateway(runtime), runtime, ClientConnection, UpstreamConnection)
    request = (
        f"POST /orders HTTP/1.1\r\nHost: api.example\r\nX-API-Key: {key.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(ORDER)}\r\n\r\n"
    ).encode() + ORDER
    sent = upstream.transport
    for _ in range(requests):
        writes = sent.writes
        client.data_received(request)
        for _ in range(3):  # a body read whole goes on in a later turn of the loop
            await asyncio.sleep(0)
        # A policy waiting for Redis: its answer is not in yet (a counter, not an event, to poll).
        while sent.writes == writes:  # noqa: ASYNC110
            await asyncio.sleep(0.0002)
        upstream.data_received(RESPONSE)
        for _ in range(3):
            await asyncio.sleep(0)
    _check_reused(upstream)


def count(requests: int, path: str, baseline: Path | None, metrics: str) -> int:
    """Instructions callgrind counts for a whole run of ``requests`` requests."""
    # A fixed hash seed: with a random one, set and dict layouts (and so the work) move by a few
    # hundred instructions per request from one process to the next.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline / "src")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--inner",
                str(requests),
                "--path",
                path,
                "--metrics",
                metrics,
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit("callgrind wrote no total")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a checkout from bench/baseline.py")
    parser.add_argument(
        "--baseline-metrics",
        default="absent",
        choices=sorted(OPERATIONS),
        help="the baseline's operations section: absent for commits before the listener",
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--metrics", default="on", choices=sorted(OPERATIONS), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--policy",
        choices=sorted((set(POLICIES) - {"none"}) | {f"{p}-redis" for p in REDIS_POLICIES}),
        help="a POST to a route with this policy, against the same POST without it",
    )
    args = parser.parse_args(argv)
    if args.inner is not None:
        if args.path.startswith("policy:"):
            uvloop.run(serve_policy(args.inner, args.path.removeprefix("policy:")))
        else:  # the loop `portico serve` runs on
            uvloop.run(serve(args.inner, args.path, args.metrics))
        return 0
    if args.policy is not None:
        print(f"instructions per POST (callgrind; {args.requests} requests less 1,000)\n")
        print("| route | this tree |")
        print("| --- | --- |")
        with contextlib.ExitStack() as stack:
            if args.policy.endswith("-redis"):
                sys.path.insert(0, str(Path(__file__).parent))
                import harness

                port = harness.start_redis(
                    stack,
                    Path(
                        stack.enter_context(tempfile.TemporaryDirectory(ignore_cleanup_errors=True))
                    ),
                )
                os.environ["PORTICO_BENCH_REDIS"] = f"redis://{harness.HOST}:{port}/0"
            for policy in ("none", args.policy):
                path = f"policy:{policy}"
                total = count(args.requests, path, None, "on") - count(1000, path, None, "on")
                print(f"| {policy} | {total / (args.requests - 1000):,.0f} |")
        return 0
    trees: list[tuple[str, Path | None, str]] = [
        ("this tree", None, "on"),
        ("this tree, metrics off", None, "off"),
    ]
    if args.baseline is not None:
        trees.append((f"baseline {args.baseline.name}", args.baseline, args.baseline_metrics))
    print(f"instructions per request (callgrind; {args.requests} requests less 1,000)\n")
    print("| path | " + " | ".join(name for name, _, _ in trees) + " |")
    print("| --- |" + " --- |" * len(trees))
    for path in ("/items/42", "/items/caf%C3%A9%20x"):
        cells = []
        for _, tree, metrics in trees:
            per = (count(args.requests, path, tree, metrics) - count(1000, path, tree, metrics)) / (
                args.requests - 1000
            )
            cells.append(f"{per:,.0f}")
        print(f"| `{path}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
