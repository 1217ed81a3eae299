"""The ``mask`` policy: remove or mask fields of JSON responses by path, for the consumers that
lack a scope (docs/masking.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per response.
"""

from __future__ import annotations

from portico.policies.mask.settings import MaskSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(MaskSettings, "portico.policies.mask.policy:build")
