"""The ``cors`` policy: cross-origin requests from browsers, by the Fetch standard's CORS
protocol (docs/cors.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request (and answers the
preflights, before the route's other policies).
"""

from __future__ import annotations

from portico.policies.cors.settings import CorsSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(CorsSettings, "portico.policies.cors.policy:build")
