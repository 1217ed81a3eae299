"""The ``publish`` policy: after a successful upstream response, publish an event with data
from the response or the request body (docs/publish-policy.md), so that an ordinary API call
(``POST /orders``) drives event-driven integration (``order.created``).

``settings.py`` is what a route writes, ``checks.py`` what it needs of the ``events`` section,
``policy.py`` what runs per request.
"""

from __future__ import annotations

from portico.policies.publish.checks import publish_errors
from portico.policies.publish.settings import PublishSettings
from portico.policies.registry import PolicyType

__all__ = ["POLICY"]

POLICY = PolicyType(PublishSettings, "portico.policies.publish.policy:build", publish_errors)
