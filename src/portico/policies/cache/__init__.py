"""The ``cache`` policy: GET and HEAD answered from stored responses, in the process or in Redis
(docs/caching.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request (with ``control.py``,
``key.py`` and ``entry.py``), ``cli.py`` the ``portico cache purge`` command.
"""

from __future__ import annotations

from portico.policies.cache.policy import build
from portico.policies.cache.settings import CacheSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(CacheSettings, build, shares_state=True)
