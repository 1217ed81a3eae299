"""The ``deprecation`` policy: a deprecated route or service announces it (``Deprecation``,
``Sunset``, ``Link``) and answers 410 once its sunset has passed (docs/deprecation.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.deprecation.settings import DeprecationSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(DeprecationSettings, "portico.policies.deprecation.policy:build")
