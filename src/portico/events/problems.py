"""The problem types of the webhooks HTTP contract (docs/errors.md, "Events and webhooks"):
answered by the admin API and the consumer API on the gateway alike, so that a client matches
one ``type`` whichever it talks to."""

from __future__ import annotations

from portico.gateway.problems import ProblemType

__all__ = [
    "DELIVERY_NOT_DEAD",
    "DELIVERY_NOT_FOUND",
    "ENDPOINT_NOT_FOUND",
    "ENDPOINT_READ_ONLY",
    "ENDPOINT_REFUSED",
    "EVENT_TYPE_UNKNOWN",
    "PAYLOAD_INVALID",
    "TYPES",
]

EVENT_TYPE_UNKNOWN = ProblemType(
    "event-type-unknown", 422, "No event type of that name in the catalog"
)
PAYLOAD_INVALID = ProblemType(
    "payload-invalid", 422, "The event's data does not match its type's schema"
)
ENDPOINT_REFUSED = ProblemType(
    "endpoint-refused", 422, "The webhook endpoint cannot be registered as given"
)
ENDPOINT_NOT_FOUND = ProblemType("endpoint-not-found", 404, "No such webhook endpoint")
ENDPOINT_READ_ONLY = ProblemType(
    "endpoint-read-only", 409, "The webhook endpoint is declared in portico.yaml and changes there"
)
DELIVERY_NOT_FOUND = ProblemType("delivery-not-found", 404, "No such webhook delivery")
DELIVERY_NOT_DEAD = ProblemType(
    "delivery-not-dead", 409, "Only a dead (or cancelled) delivery can be redelivered"
)

TYPES = (
    EVENT_TYPE_UNKNOWN,
    PAYLOAD_INVALID,
    ENDPOINT_REFUSED,
    ENDPOINT_NOT_FOUND,
    ENDPOINT_READ_ONLY,
    DELIVERY_NOT_FOUND,
    DELIVERY_NOT_DEAD,
)
