"""The ``cache`` policy's cross-section checks: where it stands among a route's policies.

A hit is answered from ``on_request`` at the policy's place: the policies after it in the
route's list do not run their ``on_request``, and its stored body does not go through any body
hook again, while every ``on_response`` runs on it as on any answer. So:

- a policy that decides who may have an answer (``auth``, ``ip-rules``, ``deprecation``'s 410)
  or that adds response fields per request (``cors``) must come before it: after it, a hit would
  skip it, or carry its fields twice (once stored, once added);
- a policy that changes response bodies (``mask``) must come after it, so that what is stored
  is already changed; and since ``mask`` depends on the consumer's scopes, responses may then be
  shared only per consumer.

A service's policies run before the route's own: a ``cache`` on a service with an ``auth`` on
its route is the first mistake.
"""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.cache.settings import CacheSettings
from portico.policies.registry import effective_policies

__all__ = ["BEFORE", "BODY_CHANGING", "cache_errors"]

BEFORE = ("auth", "ip-rules", "deprecation", "cors")
"""Policy types that must run before ``cache``."""

BODY_CHANGING = ("mask",)
"""Policy types that change response bodies: they must run after ``cache``."""


def cache_errors(settings: CacheSettings, config: PorticoConfig) -> list[Finding]:
    """Each route where an entry with these settings stands where a hit would skip a policy."""
    errors: list[Finding] = []
    for route in config.routes:
        specs = effective_policies(config, route)
        for index, spec in enumerate(specs):
            if spec.type != "cache":
                continue
            if CacheSettings.model_validate(spec.model_extra or {}) != settings:
                continue
            name = route.name
            later = [s.type for s in specs[index + 1 :] if s.type in BEFORE]
            if later:
                errors.append(
                    (
                        ("type",),
                        f"route {name!r} runs {later[0]} after this cache, but a stored "
                        f"response is answered at the cache's place: list {later[0]} before "
                        "it (a service's policies run before the route's own)",
                    )
                )
            earlier = [s.type for s in specs[:index] if s.type in BODY_CHANGING]
            if earlier:
                errors.append(
                    (
                        ("type",),
                        f"route {name!r} runs {earlier[0]} before this cache, so responses "
                        f"would be stored as the upstream sent them and hits would skip "
                        f"{earlier[0]}: list {earlier[0]} after it",
                    )
                )
            changing = [s.type for s in specs if s.type in BODY_CHANGING]
            if changing and settings.scope != "consumer":
                errors.append(
                    (
                        ("scope",),
                        f"route {name!r} runs {changing[0]}, which depends on each consumer's "
                        "scopes: its responses can only be kept per consumer (scope: consumer)",
                    )
                )
    return errors
