"""The ``publish`` policy's check of the ``events`` section, located relative to the policy
entry: ``portico check``, ``serve`` and a reload refuse a route publishing a type the catalog
does not have."""

from __future__ import annotations

from portico.config.checks import Finding
from portico.config.model import PorticoConfig
from portico.policies.publish.settings import PublishSettings

__all__ = ["publish_errors"]


def publish_errors(settings: PublishSettings, config: PorticoConfig) -> list[Finding]:
    events = config.events
    if events is None:
        return [(("event",), "the publish policy needs an events section with its type")]
    if settings.event not in events.types:
        return [(("event",), f"no event type {settings.event!r} in events.types")]
    return []
