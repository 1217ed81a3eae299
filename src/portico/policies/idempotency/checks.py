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
    """Each route where an entry with these settings runs before one of :data:`GUARDS`, or
    whose service may take longer to answer than ``lock_timeout``."""
    errors: list[Finding] = []
    for route in config.routes:
        specs = effective_policies(config, route)
        for index, spec in enumerate(specs):
            if spec.type != "idempotency" or not _applies(spec.model_extra, settings):
                continue
            for finding in _lock_errors(settings, config, route.service):
                if finding not in errors:  # a service's entry serves each of its routes
                    errors.append(finding)
            later = [s.type for s in specs[index + 1 :] if s.type in GUARDS]
            if later:
                errors.append(
                    (
                        ("type",),
                        f"route {route.name!r} runs {later[0]} after this idempotency policy, "
                        f"so a stored response would be replayed before {later[0]} runs: list "
                        f"{later[0]} first (a service's policies run before the route's own)",
                    )
                )
    return errors


def _applies(extra: dict[str, object] | None, settings: IdempotencySettings) -> bool:
    return IdempotencySettings.model_validate(extra or {}) == settings


def _lock_errors(
    settings: IdempotencySettings, config: PorticoConfig, service: str
) -> list[Finding]:
    """A lock that may expire while the upstream still works lets a retry run a second time."""
    found = config.services.get(service)
    if found is None or settings.lock_timeout > found.timeouts.read:
        return []
    return [
        (
            ("lock_timeout",),
            f"lock_timeout ({settings.lock_timeout:g}s) must be longer than timeouts.read of "
            f"service {service!r} ({found.timeouts.read:g}s): a retry would run again while "
            "the first request is still waiting for its answer",
        )
    ]
