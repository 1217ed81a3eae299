"""The ``concurrency`` policy: a maximum of requests in progress to a service (or a route) per
gateway process, with a short bounded queue, then 503 (docs/rate-limits.md#upstream-concurrency).

``settings.py`` is what a service or route writes, ``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.concurrency.settings import ConcurrencySettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(ConcurrencySettings, "portico.policies.concurrency.policy:build")
