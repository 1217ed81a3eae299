"""The router's cost on a request no built-in endpoint serves, this tree beside a baseline.

Every proxied request first asks the built-in endpoints' router (the webhooks consumer API, the
inbound webhook paths, the OAuth server's) whether one of them serves it; the common answer is
no. This times ``Router.find`` on such a miss with the built-in endpoints of a config with an
``events`` section, one inbound source and ``identity.oauth``, compiled, in this tree and in a
baseline checkout prepared by ``bench/baseline.py``, interleaved, best of five::

    .venv/bin/python bench/baseline.py 32d2e2a
    .venv/bin/python bench/router.py --baseline /tmp/portico-baseline-32d2e2a

The reference is the baseline's figure: the same call, the commit before.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = (
    "/webhooks/v1/event-types",
    "/webhooks/v1/events",
    "/webhooks/v1/endpoints",
    "/webhooks/v1/endpoints/{id}",
    "/webhooks/v1/endpoints/{id}/rotate-secret",
    "/webhooks/v1/endpoints/{id}/disable",
    "/webhooks/v1/endpoints/{id}/enable",
    "/webhooks/v1/endpoints/{id}/deliveries",
    "/webhooks/v1/endpoints/{id}/redeliver",
    "/webhooks/v1/deliveries/{id}",
    "/webhooks/v1/deliveries/{id}/redeliver",
    "/hooks/partner",
    "/oauth2/token",
    "/oauth2/revoke",
    "/oauth2/introspect",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
)
MISS = "/v1/orders/42"
CALLS = 300_000

MEASURE = f"""
import time
from portico import _native
from portico.core.paths import PathTemplate
from portico.gateway.headers import Headers
from portico.gateway.router import RouteMatcher, Router

router = Router([
    RouteMatcher(PathTemplate.parse(t), frozenset({{"GET", "POST"}}), frozenset(), (), t)
    for t in {TEMPLATES!r}
])
headers = Headers()
best = 1e9
for _ in range(5):
    started = time.perf_counter()
    for _ in range({CALLS}):
        router.find("GET", "h", {MISS!r}, headers)
    best = min(best, time.perf_counter() - started)
assert router.find("POST", "h", "/oauth2/token", headers) is not None
print(f"{{best / {CALLS} * 1e9:.0f}} {{_native.status()}}")
"""


def measure(src: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE], env=env, check=True, capture_output=True, text=True
    ).stdout.split(maxsplit=1)
    return float(out[0]), out[1].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a bench/baseline.py checkout")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    trees = {"this tree": ROOT / "src", args.baseline.name: args.baseline / "src"}
    results: dict[str, list[float]] = {name: [] for name in trees}
    status: dict[str, str] = {}
    for _ in range(args.rounds):
        for name, src in trees.items():
            nanoseconds, status[name] = measure(src)
            results[name].append(nanoseconds)
    print(f"Router.find, a miss ({MISS}) among {len(TEMPLATES)} built-in endpoints, best of 5")
    print("\n| tree | code | ns per request, each round |\n| --- | --- | --- |")
    for name, figures in results.items():
        print(f"| {name} | {status[name]} | {', '.join(f'{f:,.0f}' for f in figures)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
