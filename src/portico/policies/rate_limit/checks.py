"""The cross-section checks of the ``rate-limit`` policy: a consumer (or tenant) whose metadata
names a plan the policy does not define would silently get the default limits."""

from __future__ import annotations

from collections.abc import Iterator

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.rate_limit.limits import plan_of
from portico.policies.rate_limit.settings import RateLimitSettings

__all__ = ["rate_limit_errors"]


def rate_limit_errors(settings: RateLimitSettings, config: PorticoConfig) -> Iterator[Finding]:
    if not settings.plans:
        return
    known = ", ".join(sorted(settings.plans))
    for tenant_name, tenant in config.tenants.items():
        for name in tenant.consumers:
            consumer_id = f"{tenant_name}/{name}"
            plan = plan_of(config, consumer_id, settings.plan_key)
            if plan is not None and plan not in settings.plans:
                yield (
                    ("plans",),
                    f"consumer {consumer_id} is on plan {plan!r} ({settings.plan_key} in its "
                    f"metadata), which this policy does not define (known: {known})",
                )
