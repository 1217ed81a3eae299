"""The built-in policy types, by the name a route's ``policies`` entry gives as its ``type``.

Adding a policy is its folder (``policies/<name>/``, whose ``__init__.py`` declares ``POLICY``)
plus one line here. A type's module is imported the first time a config names it
(:class:`~portico.core.extensions.Catalogue`); this module imports none of them.
"""

from __future__ import annotations

from portico.core.extensions import Catalogue
from portico.policies.registry import PolicyType, PolicyTypes

__all__ = ["POLICIES"]

POLICIES: PolicyTypes = Catalogue(
    "policy type",
    PolicyType,
    {
        "auth": "portico.policies.auth:POLICY",
        "cache": "portico.policies.cache:POLICY",
        "concurrency": "portico.policies.concurrency:POLICY",
        "cors": "portico.policies.cors:POLICY",
        "deprecation": "portico.policies.deprecation:POLICY",
        "headers": "portico.policies.headers:POLICY",
        "idempotency": "portico.policies.idempotency:POLICY",
        "ip-rules": "portico.policies.ip_rules:POLICY",
        "mask": "portico.policies.mask:POLICY",
        "publish": "portico.policies.publish:POLICY",
        "rate-limit": "portico.policies.rate_limit:POLICY",
        "rewrite": "portico.policies.rewrite:POLICY",
        "validation": "portico.policies.validation:POLICY",
    },
)
