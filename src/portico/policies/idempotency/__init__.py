"""The ``idempotency`` policy: ``Idempotency-Key`` stores the first response and replays it for
a retry (docs/idempotency.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request, ``records.py`` the
records and atomic steps in the shared state.
"""

from __future__ import annotations

from portico.policies.idempotency.policy import build
from portico.policies.idempotency.settings import IdempotencySettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(IdempotencySettings, build, shares_state=True)
