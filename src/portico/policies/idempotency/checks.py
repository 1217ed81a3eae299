"""The ``idempotency`` policy's cross-section checks: where it stands among a route's policies,
and how long its lock lasts.

A replay is answered from ``on_request`` at the policy's place: the policies after it do not run
their ``on_request``, and the stored body does not go through any body hook again, while every
``on_response`` runs on it as on any answer. So a policy that decides who may have an answer
(``auth``, ``ip-rules``, ``deprecation``'s 410) or adds response fields per request (``cors``)
must come before it, and one that changes response bodies (``mask``) after it. A service's
policies run before the route's own.
"""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.idempotency.settings import IdempotencySettings
from portico.policies.registry import effective_policies

__all__ = ["BEFORE", "BODY_CHANGING", "idempotency_errors"]

BEFORE = ("auth", "ip-rules", "deprecation", "cors")
"""Policy types that must run before ``idempotency``."""

BODY_CHANGING = ("mask",)
"""Policy types that change response bodies: they must run after ``idempotency``."""


def idempotency_errors(settings: IdempotencySettings, config: PorticoConfig) -> list[Finding]:
    """Each route where an entry with these settings stands where a replay would skip a
    policy, or whose service may take longer to answer than ``lock_timeout``."""
    errors: list[Finding] = []
    for route in config.routes:
        specs = effective_policies(config, route)
        for index, spec in enumerate(specs):
            if spec.type != "idempotency":
                continue
            if IdempotencySettings.model_validate(spec.model_extra or {}) != settings:
                continue
            for finding in _lock_errors(settings, config, route.service):
                if finding not in errors:  # a service's entry serves each of its routes
                    errors.append(finding)
            later = [s.type for s in specs[index + 1 :] if s.type in BEFORE]
            if later:
                errors.append(
                    (
                        ("type",),
                        f"route {route.name!r} runs {later[0]} after this idempotency policy, "
                        "but a stored response is replayed at this policy's place: list "
                        f"{later[0]} before it (a service's policies run before the route's own)",
                    )
                )
            earlier = [s.type for s in specs[:index] if s.type in BODY_CHANGING]
            if earlier:
                errors.append(
                    (
                        ("type",),
                        f"route {route.name!r} runs {earlier[0]} before this idempotency "
                        "policy, so responses would be stored as the upstream sent them and "
                        f"replays would skip {earlier[0]}: list {earlier[0]} after it",
                    )
                )
    return errors


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
