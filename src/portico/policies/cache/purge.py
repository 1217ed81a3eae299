"""What a purge removes: the key prefixes of a route's stored responses, or of some of its paths
(``portico cache purge`` and the admin API's ``POST /admin/v1/cache/purge``, docs/caching.md).

A path is written as clients request it: it is made canonical as a request's path is, and both
spellings a route takes for one path (with and without the trailing slash, docs/security.md)
are purged together.
"""

from __future__ import annotations

from collections.abc import Sequence

from portico.config.model import PorticoConfig
from portico.gateway.uri import BadTarget, canonical_path
from portico.policies.cache.key import path_prefix, route_prefix
from portico.policies.registry import effective_policies

__all__ = ["PurgeRefused", "purge_prefixes"]


class PurgeRefused(Exception):
    """A purge that cannot be done; ``field`` is what is wrong (``route`` or ``keys``, and the
    index of the key in ``index``)."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.index = index


def purge_prefixes(
    config: PorticoConfig, route_name: str, keys: Sequence[str], where: str = "the config"
) -> list[str]:
    """The prefixes of what to remove: every entry of route ``route_name``, or of its paths
    ``keys`` (any query, consumer or variant); ``where`` names the config in messages."""
    route = next((r for r in config.routes if r.name == route_name), None)
    if route is None:
        known = ", ".join(sorted(r.name for r in config.routes)) or "none"
        raise PurgeRefused("route", f"{where} has no route {route_name!r} (its routes: {known})")
    if not any(spec.type == "cache" for spec in effective_policies(config, route)):
        raise PurgeRefused(
            "route", f"route {route_name!r} has no cache policy in {where}: nothing to purge"
        )
    prefixes: list[str] = []
    for index, key in enumerate(keys):
        raw = key.partition("?")[0]
        try:
            path = canonical_path(raw) if raw.startswith("/") else None
        except BadTarget as exc:
            raise PurgeRefused(
                "keys", f"{key!r} is not a path a route could match: {exc}", index
            ) from exc
        if path is None:
            raise PurgeRefused("keys", f"{key!r} must be a path starting with /", index)
        trimmed = path.rstrip("/") or "/"
        for spelling in sorted({trimmed, trimmed + "/" if trimmed != "/" else "/"}):
            prefixes.append(path_prefix(route.name, spelling))
    return prefixes or [route_prefix(route.name)]
