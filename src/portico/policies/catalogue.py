"""The built-in policy types: importing this module registers each of them.

Adding a policy is its module plus one line here.
"""

from __future__ import annotations

from portico.policies import auth, headers, ip_rules
from portico.policies.registry import PolicyType, policy_types

__all__ = ["BUILTIN", "catalogue"]

BUILTIN = (auth, headers, ip_rules)


def catalogue() -> dict[str, PolicyType]:
    """Every registered policy type, by name."""
    return policy_types()
