"""``portico cache purge``: remove stored responses of a route, or of some of its paths.

Here rather than in ``policies/cache/``: importing that package imports its settings (Pydantic),
which ``portico --help`` must not pay for; the command imports the key layout when it runs.

The responses live in the shared state. With the config's ``redis`` section that is Redis,
which this command reaches as every gateway process does, so a purge takes effect at once
everywhere. Without it they live in the memory of the one gateway process, which no other
process can reach: the command says so and changes nothing (the entries end with their
``ttl``, or when the process restarts; docs/caching.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portico.core.errors import PorticoError

if TYPE_CHECKING:
    from portico.config.model import PorticoConfig

__all__ = ["register"]


class PurgeError(PorticoError):
    """A purge that cannot be done as asked; the message says why and what to do."""


def register(subparsers: Any, load_config: Callable[[Path], PorticoConfig]) -> None:
    """Add ``cache purge`` to the ``portico`` command."""
    cache = subparsers.add_parser(
        "cache",
        help="manage the responses the cache policy stored",
        description="Manage the responses the cache policy stored (docs/caching.md).",
    )
    sub = cache.add_subparsers(dest="cache_command", required=True, metavar="COMMAND")
    purge = sub.add_parser(
        "purge",
        help="remove the stored responses of a route, or of some of its paths",
        description="Remove the stored responses of a route (every path, query, consumer and "
        "variant), or only those of the paths given with --key. Needs the config's redis "
        "section: responses kept in a gateway process's memory cannot be reached from here.",
    )
    purge.add_argument(
        "-c",
        "--config",
        default="portico.yaml",
        type=Path,
        metavar="FILE",
        help="the config file: its routes and redis section (default: portico.yaml)",
    )
    purge.add_argument("--route", required=True, metavar="NAME", help="the route's name")
    purge.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="PATH",
        help="a path as clients request it, such as /products/42 (any query); repeatable",
    )
    purge.set_defaults(func=cmd_purge, load_config=load_config)


def cmd_purge(args: argparse.Namespace) -> int:
    from portico.gateway.uri import BadTarget, canonical_path
    from portico.policies.cache.key import path_prefix, route_prefix
    from portico.policies.registry import effective_policies
    from portico.shared import open_shared_state

    config: PorticoConfig = args.load_config(args.config)
    route = next((r for r in config.routes if r.name == args.route), None)
    if route is None:
        known = ", ".join(sorted(r.name for r in config.routes)) or "none"
        raise PurgeError(f"{args.config} has no route {args.route!r} (its routes: {known})")
    if not any(spec.type == "cache" for spec in effective_policies(config, route)):
        raise PurgeError(
            f"route {args.route!r} has no cache policy in {args.config}: nothing to purge"
        )
    if config.redis is None:
        raise PurgeError(
            f"{args.config} has no redis section, so the cache lives in the memory of the "
            "gateway process, which this command cannot reach; its entries end with their ttl "
            "or when the gateway restarts (docs/caching.md#purging)"
        )
    prefixes: list[str] = []
    for key in args.key:
        raw = key.partition("?")[0]
        try:
            path = canonical_path(raw) if raw.startswith("/") else None
        except BadTarget as exc:
            raise PurgeError(f"--key {key!r} is not a path a route could match: {exc}") from exc
        if path is None:
            raise PurgeError(f"--key {key!r} must be a path starting with /, such as /products/42")
        # Both spellings a route takes for one path (docs/security.md): with and without the
        # trailing slash.
        trimmed = path.rstrip("/") or "/"
        for spelling in {trimmed, trimmed + "/" if trimmed != "/" else "/"}:
            prefixes.append(path_prefix(route.name, spelling))
    if not prefixes:
        prefixes.append(route_prefix(route.name))

    async def purge() -> int:
        state = open_shared_state(config.redis)
        try:
            return sum([await state.delete_prefix(prefix) for prefix in prefixes])
        finally:
            await state.close()

    import asyncio  # here: `portico --help` and `check` must not load the event loop

    removed = asyncio.run(purge())
    what = f"paths {', '.join(args.key)} of route" if args.key else "route"
    print(f"purged {removed} cache entries of {what} {args.route}", file=sys.stderr)
    return 0
