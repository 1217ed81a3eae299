"""Changes of lifecycle between two configs: what a reload (and, later, ``portico apply``)
writes to the audit log as ``service.lifecycle`` (docs/catalog.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portico.config.model import PorticoConfig

__all__ = ["LIFECYCLE_ACTION", "LifecycleChange", "lifecycle_changes"]

LIFECYCLE_ACTION = "service.lifecycle"
"""The audit log's action for a change of a service's lifecycle."""


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """A service whose lifecycle differs between two configs, as the audit log records it:
    ``before`` and ``after`` are :meth:`~portico.config.catalog.Lifecycle.summary`."""

    service: str
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def detail(self) -> dict[str, Any]:
        return {"from": self.before["state"], "to": self.after["state"]}


def lifecycle_changes(old: PorticoConfig, new: PorticoConfig) -> list[LifecycleChange]:
    """The lifecycles that changed from ``old`` to ``new`` (state, dates or links), in the
    order of ``new``'s services. A service added or removed is not a change of lifecycle (the
    config revision records it). Pure: ``serve`` calls it for each reload it applies."""
    changes: list[LifecycleChange] = []
    for name, service in new.services.items():
        previous = old.services.get(name)
        if previous is None or previous.lifecycle == service.lifecycle:
            continue
        changes.append(
            LifecycleChange(name, previous.lifecycle.summary(), service.lifecycle.summary())
        )
    return changes
