"""The ``rewrite`` policy: the request's path by regular expression, and its query parameters
(remove, rename, set, add), before it goes upstream (docs/transform.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.registry import PolicyType
from portico.policies.rewrite.settings import RewriteSettings

__all__ = ["POLICY"]

POLICY = PolicyType(RewriteSettings, "portico.policies.rewrite.policy:build")
