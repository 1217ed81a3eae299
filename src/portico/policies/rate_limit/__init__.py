"""The ``rate-limit`` policy: several limits at once (rates over a sliding window, quotas per
calendar day or month), keyed by consumer, tenant, route, service, client address or a header,
with plans per consumer (docs/rate-limits.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request, ``algorithm.py``
the counting (one script, in Lua for Redis and in Python for one process).
"""

from __future__ import annotations

from portico.policies.rate_limit.checks import rate_limit_errors
from portico.policies.rate_limit.settings import RateLimitSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(
    RateLimitSettings,
    "portico.policies.rate_limit.policy:build",
    rate_limit_errors,
    shares_state=True,
)
