"""The ``idempotency`` policy's check: no ``auth`` or ``ip-rules`` may run after it.

A replay answers from ``on_request``, so every policy after ``idempotency`` in a route's list is
skipped on a replay: an ``auth`` there would be bypassed, and the key could not belong to the
consumer. A service's policies run before the route's own, so an ``idempotency`` on a service
with an ``auth`` on its route is that mistake too.
"""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.idempotency.settings import IdempotencySettings
from portico.policies.registry import effective_policies

GUARDS = ("auth", "ip-rules")
"""Policies that decide who may have an answer: they must run before a stored one is given."""

__all__ = ["GUARDS", "idempotency_errors"]


def idempotency_errors(settings: IdempotencySettings, config: PorticoConfig) -> list[Finding]:
    """Each route where an entry with these settings runs before one of :data:`GUARDS`."""
    errors: list[Finding] = []
    for route in config.routes:
        specs = effective_policies(config, route)
        for index, spec in enumerate(specs):
            later = [s.type for s in specs[index + 1 :] if s.type in GUARDS]
            if spec.type != "idempotency" or not later:
                continue
            if IdempotencySettings.model_validate(spec.model_extra or {}) != settings:
                continue
            errors.append(
                (
                    ("type",),
                    f"route {route.name!r} runs {later[0]} after this idempotency policy, so a "
                    f"stored response would be replayed before {later[0]} runs: list "
                    f"{later[0]} first (a service's policies run before the route's own)",
                )
            )
    return errors
