"""The event catalog: the types a publisher may send, each with the JSON Schema of its ``data``.

Built once per config (the schemas compiled with jsonschema-rs, as the validation policy does);
:meth:`EventCatalog.check` is what publishing calls before anything is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from portico.config.events import EventsSettings, EventType
from portico.core.errors import PorticoError

__all__ = [
    "OPERATIONAL_TYPES",
    "EventCatalog",
    "InvalidPayload",
    "PayloadError",
    "UnknownEventType",
    "schema_problems",
]

MAX_ERRORS = 20
"""At most this many schema errors in one refusal."""

OPERATIONAL_TYPES: Mapping[str, EventType] = {
    "endpoint.disabled": EventType.model_validate(
        {
            "description": "An endpoint was disabled: it answered 410 Gone, or its deliveries "
            "failed for events.delivery.disable_after. Sent to the other endpoints of its owner "
            "subscribed to it.",
            "version": "1",
            "schema": {
                "type": "object",
                "required": ["endpoint_id", "url", "reason"],
                "properties": {
                    "endpoint_id": {"type": "string"},
                    "url": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
            "owner": "portico",
        }
    ),
}
"""Types Portico publishes itself (docs/webhooks.md, "Operational events"): always in the
catalog, never published by anyone else."""


@dataclass(frozen=True, slots=True)
class PayloadError:
    pointer: str
    message: str


class UnknownEventType(PorticoError):
    """No type of that name in the catalog."""


class InvalidPayload(PorticoError):
    """The ``data`` does not match its type's schema; ``errors`` say where and why."""

    def __init__(self, event_type: str, errors: list[PayloadError]) -> None:
        super().__init__(f"the data of {event_type} does not match its schema")
        self.errors = errors


def schema_problems(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not a usable JSON Schema, or ``None``."""
    try:
        jsonschema_rs.validator_for(dict(schema), offline=True)
    except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        return str(exc).splitlines()[0]
    return None


class EventCatalog:
    """The types of one config, and Portico's own operational types."""

    def __init__(self, settings: EventsSettings | None) -> None:
        declared = dict(settings.types) if settings is not None else {}
        self.types: dict[str, EventType] = {**declared, **OPERATIONAL_TYPES}
        self._validators: dict[str, jsonschema_rs.Validator | None] = {
            name: (
                jsonschema_rs.validator_for(dict(kind.schema_), offline=True)
                if kind.schema_
                else None
            )
            for name, kind in self.types.items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def check(self, event_type: str, data: Any, *, internal: bool = False) -> None:
        """Raise :class:`UnknownEventType` or :class:`InvalidPayload` for what cannot be published;
        ``internal`` allows Portico's own operational types."""
        if event_type in OPERATIONAL_TYPES and not internal:
            raise UnknownEventType(f"{event_type} is Portico's own event type: only it publishes")
        if event_type not in self.types:
            raise UnknownEventType(f"no event type {event_type!r} in the catalog")
        validator = self._validators[event_type]
        if validator is None or validator.is_valid(data):
            return
        errors: list[PayloadError] = []
        for error in validator.iter_errors(data):
            path = "".join(
                "/" + str(part).replace("~", "~0").replace("/", "~1")
                for part in error.instance_path
            )
            errors.append(PayloadError("/data" + path, error.message))
            if len(errors) >= MAX_ERRORS:
                break
        raise InvalidPayload(event_type, errors)
