"""The ``idempotency`` policy: ``Idempotency-Key`` stores the first response and replays it for
a retry (docs/idempotency.md).

``settings.py`` is what a route writes, ``checks.py`` its check of the route's order,
``policy.py`` what runs per request, ``records.py`` the records and atomic steps in the shared
state.
"""

from __future__ import annotations

from portico.policies.idempotency.checks import idempotency_errors
from portico.policies.idempotency.settings import IdempotencySettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(
    IdempotencySettings,
    "portico.policies.idempotency.policy:build",
    idempotency_errors,
    shares_state=True,
)
