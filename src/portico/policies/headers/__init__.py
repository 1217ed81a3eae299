"""The ``headers`` policy: set, add or remove request and response header fields
(docs/headers.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.headers.settings import HeadersSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(HeadersSettings, "portico.policies.headers.policy:build")
