"""The event types of the catalog: each with its description, the version of its payload's
shape, its owner and the JSON Schema of its ``data``; Portico's own operational types
(``endpoint.disabled``) among them, marked so. What ``GET /admin/v1/event-types``,
``GET /admin/v1/catalog/event-types``, ``portico events types`` and ``portico catalog
event-types`` show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portico.config.model import PorticoConfig
from portico.events.catalog import OPERATIONAL_TYPES, EventCatalog

__all__ = ["EventTypeEntry", "event_types"]


@dataclass(frozen=True, slots=True)
class EventTypeEntry:
    name: str
    description: str
    version: str
    owner: str | None
    schema: dict[str, Any]
    operational: bool
    """Published by Portico itself, never by a publisher."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "owner": self.owner,
            "schema": self.schema,
            "operational": self.operational,
        }


def event_types(config: PorticoConfig) -> list[EventTypeEntry]:
    """The catalog's types, by name."""
    catalog = EventCatalog(config.events)
    return [
        EventTypeEntry(
            name=name,
            description=kind.description,
            version=kind.version,
            owner=kind.owner,
            schema=dict(kind.schema_),
            operational=name in OPERATIONAL_TYPES,
        )
        for name, kind in sorted(catalog.types.items())
    ]
