"""The ``validation`` policy: requests checked against the service's OpenAPI document
(docs/validation.md).

``settings.py`` is what a route writes, ``policy.py`` what runs per request; ``document.py``
reads the document, ``compiler.py`` compiles it once, ``checks.py`` is what ``portico check``
says of it.
"""

from __future__ import annotations

from portico.policies.registry import PolicyType
from portico.policies.validation.settings import ValidationSettings

__all__ = ["POLICY"]

POLICY = PolicyType(ValidationSettings, "portico.policies.validation.policy:build")
