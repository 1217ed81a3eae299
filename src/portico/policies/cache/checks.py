"""The ``cache`` policy's cross-section check: no ``auth`` or ``ip-rules`` may run after it.

A stored response answers from ``on_request``, so every policy after ``cache`` in a route's
list is skipped on a hit: an ``auth`` there would be bypassed, and the key could not name the
consumer. A service's policies run before the route's own, so a ``cache`` on a service with an
``auth`` on its route is that mistake too.
"""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.cache.settings import CacheSettings
from portico.policies.registry import effective_policies

GUARDS = ("auth", "ip-rules")
"""Policies that decide who may have an answer: they must run before a stored one is given."""

__all__ = ["GUARDS", "cache_errors"]


def cache_errors(settings: CacheSettings, config: PorticoConfig) -> list[Finding]:
    """Each route where an entry with these settings runs before one of :data:`GUARDS`."""
    errors: list[Finding] = []
    for route in config.routes:
        specs = effective_policies(config, route)
        for index, spec in enumerate(specs):
            later = [s.type for s in specs[index + 1 :] if s.type in GUARDS]
            if spec.type != "cache" or not later:
                continue
            if CacheSettings.model_validate(spec.model_extra or {}) != settings:
                continue
            errors.append(
                (
                    ("type",),
                    f"route {route.name!r} runs {later[0]} after this cache, so a stored "
                    f"response would answer before {later[0]} runs: list {later[0]} first (a "
                    "service's policies run before the route's own)",
                )
            )
    return errors
