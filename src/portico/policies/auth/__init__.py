"""The ``auth`` policy: who is calling, and whether they may call this route
(docs/identity.md, "The auth policy").

``settings.py`` is what a route writes, ``checks.py`` what it needs from other sections of the
config, ``policy.py`` what runs per request (compiled). The methods it lists are the catalogue of
:mod:`portico.identity.authn`.
"""

from __future__ import annotations

from portico.policies.auth.checks import auth_errors
from portico.policies.auth.settings import AuthSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(AuthSettings, "portico.policies.auth.policy:build", checks=auth_errors)
