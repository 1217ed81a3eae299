"""The ``ip-rules`` policy: allow and deny lists of client addresses for one route
(docs/ip-rules.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.ip_rules.settings import IPRulesSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(IPRulesSettings, "portico.policies.ip_rules.policy:build")
