"""The ``events`` section: the event catalog, webhook endpoints declared by the operator, how
deliveries are made, and the inbound webhooks Portico receives (docs/webhooks.md).

Only the shape of the section is checked here; what needs the events capability (each type's
JSON Schema, payload filters, endpoint URLs against the SSRF rules, consumers that exist) is
checked by :mod:`portico.events.checks`, at the same file line and field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from portico.config.fields import CIDR, Duration, HeaderName, Model, Name, Size

__all__ = [
    "DEFAULT_SCHEDULE",
    "EVENT_TYPE_PATTERN",
    "TYPE_FILTER_PATTERN",
    "ConsumerApi",
    "DeliverySettings",
    "EventType",
    "EventsSettings",
    "InboundSource",
    "Ordering",
    "WebhookEndpoint",
]

EVENT_TYPE_PATTERN = r"^[a-z0-9_]+(?:[.-][a-z0-9_]+)*$"
"""A dotted event type name: ``order.created``, ``invoice.payment-failed``."""
TYPE_FILTER_PATTERN = r"^(?:\*|[a-z0-9_]+(?:[.-][a-z0-9_]+)*(?:\.\*)?)$"
"""What an endpoint subscribes to: a type, ``order.*`` (every type under ``order.``) or ``*``."""

EventTypeName = Annotated[str, Field(pattern=EVENT_TYPE_PATTERN, max_length=200)]

DEFAULT_SCHEDULE: tuple[float, ...] = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
"""When each attempt is made, after the previous one failed: immediately, 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h (as Svix's schedule); eight attempts in about 27.5 hours."""


class EventType(Model):
    """One type of the catalog: what a publisher may send, and what a subscriber receives."""

    description: str = Field(min_length=1, max_length=4000)
    version: str = Field("1", min_length=1, max_length=40)
    """The version of the payload's shape, shown in the catalog; a breaking change is a new type
    name (``order.created.v2``) or a new version here, as the publisher decides."""
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    """The JSON Schema (2020-12 unless ``$schema`` says otherwise) of the event's ``data``; an
    empty schema accepts any JSON value."""
    owner: str | None = Field(None, min_length=1, max_length=200)


class Ordering(Model):
    """FIFO delivery: the next message for a key waits until the previous one has succeeded or
    died; messages of other keys are not held up."""

    key: str = Field("endpoint", pattern=r"^(endpoint|data(\.[A-Za-z0-9_-]+)+)$")
    """``endpoint`` (one queue for the whole endpoint) or the dotted path of a payload field
    (``data.order_id``); an event without that field is ordered under the empty key."""


class WebhookEndpoint(Model):
    """An endpoint the operator declares (consumers also register their own through the API)."""

    consumer: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
    """``tenant/consumer``: who owns the endpoint, manages it and sees its deliveries."""
    url: str = Field(min_length=1, max_length=2000)
    description: str | None = Field(None, max_length=4000)
    types: tuple[str, ...] = Field(("*",), min_length=1)
    """The event types delivered: names, ``prefix.*`` or ``*``."""
    filter: dict[str, Any] | None = None
    """Conditions on the event's fields, all of which must hold (docs/webhooks.md, "Payload
    filters"): ``{"data.total": {"gte": 100}, "data.country": {"in": ["FR", "DE"]}}``."""
    secret: str = Field(min_length=1)
    """``whsec_…`` (HMAC-SHA256, ``v1``) or ``whsk_…`` (Ed25519, ``v1a``); ``${VAR}`` to keep it
    out of the file."""
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    """Deliveries per second to this endpoint at most, from each delivering process (one, in the
    embedded default: the limit is then exact)."""
    concurrency: int | None = Field(None, ge=1, le=10_000)
    """Deliveries in flight to this endpoint at most, per delivering process."""
    ordering: Ordering | None = None
    disabled: StrictBool = False

    @field_validator("types")
    @classmethod
    def _type_filters(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not re.match(TYPE_FILTER_PATTERN, item):
                raise ValueError(
                    f"{item!r} is not an event type filter: a type (order.created), a prefix "
                    "with .* (order.*) or *"
                )
        return value


class DeliverySettings(Model):
    """How webhooks are delivered (docs/webhooks.md, "Retries")."""

    enabled: StrictBool = True
    """Deliver from ``portico serve``; off when separate ``portico serve --role worker``
    processes deliver instead."""
    schedule: tuple[Duration, ...] = Field(DEFAULT_SCHEDULE, min_length=1, max_length=50)
    """The delay before each attempt, the first counted from publishing."""
    jitter: float = Field(0.2, ge=0, le=1)
    """Each delay after the first is drawn within ±this fraction, so that retries of many
    deliveries that failed together do not arrive together."""
    timeout: Duration = 15.0
    """How long an attempt may take, connecting and answering; longer is a failure."""
    claim_timeout: Duration = 60.0
    """How long a claimed delivery stays with its process: past it (the process died), another
    process delivers it. Longer than ``timeout``."""
    batch_size: int = Field(200, ge=1, le=10_000)
    max_in_flight: int = Field(256, ge=1, le=100_000)
    """Attempts in flight at once in one delivering process."""
    poll_interval: Duration = 0.25
    """How often an idle process looks for due deliveries; a publish in the same process wakes
    it at once."""
    disable_after: Duration = 5 * 86400.0
    """An endpoint whose deliveries have all failed for this long is disabled, and
    ``endpoint.disabled`` is published to its owner."""
    allow_http: StrictBool = False
    """Development mode: endpoints may use ``http://``. Never in production."""
    allow_networks: tuple[CIDR, ...] = ()
    """Networks endpoints may resolve to although private, loopback or link-local (the SSRF
    guard refuses them otherwise)."""
    response_body_limit: Size = 4096
    """How much of a response body the delivery log keeps."""
    secret_overlap: Duration = 86400.0
    """After a rotation, how long the previous secret keeps signing beside the new one."""
    retention: Duration = 30 * 86400.0
    """How long finished deliveries, their attempts and their events are kept."""

    @field_validator("schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("a delay of the schedule cannot be negative")
        return value

    @model_validator(mode="after")
    def _claim_outlives_attempt(self) -> DeliverySettings:
        if self.claim_timeout <= self.timeout:
            raise ValueError("claim_timeout must be longer than timeout")
        return self


class InboundSource(Model):
    """Webhooks Portico receives from a third party at ``path`` (docs/inbound-webhooks.md)."""

    path: str = Field(pattern=r"^/[^\s?#]*$")
    scheme: Literal["standard-webhooks", "github", "stripe", "hmac"] = "standard-webhooks"
    secrets: tuple[str, ...] = Field(min_length=1)
    """The sender's secrets (several while the sender rotates); ``${VAR}`` to keep them out of
    the file."""
    event_type: str = Field(pattern=EVENT_TYPE_PATTERN)
    """The internal event each received webhook is republished as."""
    tolerance: Duration = 300.0
    """How far a signed timestamp may be from now, either way."""
    id_header: HeaderName | None = None
    """The header whose value identifies a message for deduplication (``webhook-id`` for
    Standard Webhooks, ``X-GitHub-Delivery`` for GitHub); without it, the body's SHA-256."""
    max_body_size: Size = 1024 * 1024
    # The generic HMAC scheme (scheme: hmac).
    header: HeaderName | None = None
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    template: str = "{body}"
    """The signed content: ``{body}``, and ``{timestamp}`` from ``timestamp_header``."""
    timestamp_header: HeaderName | None = None

    @model_validator(mode="after")
    def _hmac_needs_a_header(self) -> InboundSource:
        if self.scheme == "hmac" and self.header is None:
            raise ValueError("scheme hmac needs header: the header carrying the signature")
        if "{timestamp}" in self.template and self.timestamp_header is None:
            raise ValueError("a template with {timestamp} needs timestamp_header")
        return self


class ConsumerApi(Model):
    """The Open API a subscriber uses on the gateway's listener, with its own credentials."""

    enabled: StrictBool = True
    path_prefix: str = Field("/webhooks/v1", pattern=r"^/[A-Za-z0-9_./-]*[A-Za-z0-9_-]$")
    auth: tuple[str, ...] = ("api_key", "oauth", "jwt")
    """How a consumer authenticates there, as the ``auth`` policy's ``methods``."""
    publish_scope: str = "events:publish"
    """The scope a consumer needs to publish (its own events)."""
    manage_scope: str | None = None
    """The scope a consumer needs to manage its endpoints; ``None``: any authenticated consumer
    manages its own."""


class EventsSettings(Model):
    types: dict[EventTypeName, EventType] = {}
    endpoints: dict[Name, WebhookEndpoint] = {}
    delivery: DeliverySettings = DeliverySettings()
    inbound: dict[Name, InboundSource] = {}
    api: ConsumerApi = ConsumerApi()
