"""The ``cache`` policy: GET and HEAD answered from stored responses, in the process or in Redis
(docs/caching.md).

``settings.py`` is what a route writes, ``checks.py`` its check of the route's order,
``policy.py`` what runs per request (with ``control.py``, ``key.py`` and ``entry.py``);
``portico cache purge`` is ``portico/cli/cache.py``.
"""

from __future__ import annotations

from portico.policies.cache.checks import cache_errors
from portico.policies.cache.settings import CacheSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(
    CacheSettings, "portico.policies.cache.policy:build", cache_errors, shares_state=True
)
