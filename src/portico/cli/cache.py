"""``portico cache purge``: remove stored responses of a route, or of some of its paths.

Here rather than in ``policies/cache/``: importing that package imports its settings (Pydantic),
which ``portico --help`` must not pay for; the command imports the key layout when it runs.

The responses live in the shared state. With the config's ``redis`` section that is Redis,
which this command reaches as every gateway process does, so a purge takes effect at once
everywhere. Without it they live in the memory of the one gateway process, which no other
process can reach but its admin API, which runs in it: the command asks the admin API to purge
them, with an admin token (``--admin-token`` or ``PORTICO_ADMIN_TOKEN``; docs/caching.md).
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
        "variant), or only those of the paths given with --key. With the config's redis "
        "section, in Redis; without it, in the gateway process's memory, through its admin "
        f"API (an admin token from --admin-token or {TOKEN_ENV}).",
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
    purge.add_argument(
        "--admin-token",
        metavar="TOKEN",
        help="an admin token (operator role or more), for a cache in memory "
        f"(default: ${TOKEN_ENV})",
    )
    purge.set_defaults(func=cmd_purge, load_config=load_config)


TOKEN_ENV = "PORTICO_ADMIN_TOKEN"  # noqa: S105  (the variable's name, not a token)
"""The admin token a purge of a cache in memory uses, unless ``--admin-token`` gives one."""


def cmd_purge(args: argparse.Namespace) -> int:
    from portico.policies.cache.purge import PurgeRefused, purge_prefixes

    config: PorticoConfig = args.load_config(args.config)
    try:
        prefixes = purge_prefixes(config, args.route, args.key, str(args.config))
    except PurgeRefused as refused:
        prefix = "--key " if refused.index is not None else ""
        raise PurgeError(prefix + refused.message) from None
    if config.redis is None:
        removed = _purge_through_admin_api(config, args)
    else:
        removed = _purge_redis(config, prefixes)
    what = f"paths {', '.join(args.key)} of route" if args.key else "route"
    print(f"purged {removed} cache entries of {what} {args.route}", file=sys.stderr)
    return 0


def _purge_redis(config: PorticoConfig, prefixes: list[str]) -> int:
    from portico.shared import open_shared_state

    async def purge() -> int:
        state = open_shared_state(config.redis)
        try:
            return sum([await state.delete_prefix(prefix) for prefix in prefixes])
        finally:
            await state.close()

    import asyncio  # here: `portico --help` and `check` must not load the event loop

    return asyncio.run(purge())


def _purge_through_admin_api(config: PorticoConfig, args: argparse.Namespace) -> int:
    """Without Redis the entries are in the one gateway process's memory: its admin API, which
    runs in that process, removes them (``POST /admin/v1/cache/purge``)."""
    import http.client
    import json
    import os

    admin = config.admin
    if admin is None or not admin.enabled:
        raise PurgeError(
            f"{args.config} has no redis section, so the cache lives in the memory of the "
            "gateway process, and no admin section to reach it with: enable the admin API "
            "(docs/admin-api.md) or configure Redis (docs/caching.md#purging)"
        )
    token = args.admin_token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise PurgeError(
            "the cache is in the gateway process's memory, purged through its admin API: give "
            f"an admin token (operator or admin role) with --admin-token or {TOKEN_ENV}"
        )
    where = admin.listen
    address = f"{where.host}:{where.port}"
    body = json.dumps({"route": args.route, "keys": args.key}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(where.host, where.port, timeout=10)
    try:
        connection.request("POST", "/admin/v1/cache/purge", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
    except OSError as exc:
        raise PurgeError(
            f"nothing answered on the admin listener at {address} ({exc.strerror or exc}): "
            "is the gateway running with this config?"
        ) from exc
    finally:
        connection.close()
    try:
        document = json.loads(answer)
    except ValueError:
        document = {}
    if response.status != 200 or not isinstance(document, dict):
        detail = document.get("detail") if isinstance(document, dict) else None
        raise PurgeError(
            f"the admin API at {address} answered {response.status}: "
            f"{detail or document.get('title') or answer[:200]!r}"
        )
    return int(document["purged"])
