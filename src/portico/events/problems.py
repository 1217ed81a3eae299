"""The problem types of the webhooks APIs and of inbound webhooks (docs/errors.md, "Events and
webhooks"): the consumer API on the gateway answers them, and the admin API answers the same for
the same faults. :class:`EventsProblem` is how the code raises one; it becomes the answer where
the request is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portico.gateway.exchange import Reply
from portico.gateway.headers import Headers
from portico.gateway.problems import ProblemType, problem

__all__ = [
    "DELIVERY_NOT_DEAD",
    "DELIVERY_NOT_FOUND",
    "ENDPOINT_NOT_FOUND",
    "ENDPOINT_READ_ONLY",
    "ENDPOINT_REFUSED",
    "EVENT_TYPE_UNKNOWN",
    "PAYLOAD_INVALID",
    "STORE_UNAVAILABLE",
    "TYPES",
    "WEBHOOK_SIGNATURE_INVALID",
    "EventsProblem",
]

EVENT_TYPE_UNKNOWN = ProblemType("event-type-unknown", 422, "The event type is not in the catalog")
PAYLOAD_INVALID = ProblemType(
    "payload-invalid", 422, "The event's data does not match its type's schema"
)
ENDPOINT_NOT_FOUND = ProblemType("endpoint-not-found", 404, "No such webhook endpoint")
ENDPOINT_REFUSED = ProblemType(
    "endpoint-refused", 422, "The webhook endpoint cannot be registered as given"
)
ENDPOINT_READ_ONLY = ProblemType(
    "endpoint-read-only", 409, "The webhook endpoint is declared in the config file"
)
DELIVERY_NOT_FOUND = ProblemType("delivery-not-found", 404, "No such webhook delivery")
DELIVERY_NOT_DEAD = ProblemType(
    "delivery-not-dead", 409, "Only a dead (or cancelled) delivery can be redelivered"
)
STORE_UNAVAILABLE = ProblemType(
    "store-unavailable", 503, "The store is busy or cannot be reached; nothing was changed"
)
WEBHOOK_SIGNATURE_INVALID = ProblemType(
    "webhook-signature-invalid", 401, "The webhook's signature does not verify"
)

TYPES: tuple[ProblemType, ...] = (
    EVENT_TYPE_UNKNOWN,
    PAYLOAD_INVALID,
    ENDPOINT_NOT_FOUND,
    ENDPOINT_REFUSED,
    ENDPOINT_READ_ONLY,
    DELIVERY_NOT_FOUND,
    DELIVERY_NOT_DEAD,
    STORE_UNAVAILABLE,
    WEBHOOK_SIGNATURE_INVALID,
)


class EventsProblem(Exception):
    """An answer that is a problem: its type, a detail, and extension members (``errors``)."""

    def __init__(
        self,
        kind: ProblemType,
        detail: str | None = None,
        *,
        headers: Sequence[tuple[str, str]] = (),
        **extensions: Any,
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail
        self.headers = tuple(headers)
        self.extensions = extensions

    def reply(self, request_id: str) -> Reply:
        headers = Headers(list(self.headers)) if self.headers else None
        return problem(self.kind, request_id, self.detail, headers=headers, **self.extensions)


def pointer_errors(errors: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """``errors`` as the problem member lists them: ``{"pointer", "message"}``."""
    return [{"pointer": pointer, "message": message} for pointer, message in errors]
