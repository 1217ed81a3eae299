"""The admin API's representations of webhook endpoints, deliveries, attempts and events
(the request and response bodies of :mod:`portico.admin.endpoints.webhooks` and
:mod:`portico.admin.endpoints.webhook_deliveries`, as the OpenAPI document shows them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.admin.pagination import Page
from portico.config.events import TYPE_FILTER_PATTERN

DeliveryStatus = Literal["pending", "succeeded", "dead", "cancelled"]
MAX_OVERLAP = 30 * 86400
CONSUMER_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
ORDERING_PATTERN = r"^(endpoint|data(\.[A-Za-z0-9_-]+)+)$"


class OrderingView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field("endpoint", pattern=ORDERING_PATTERN, max_length=200)
    """`endpoint` (one queue for the endpoint) or a payload field (`data.order_id`)."""


class EndpointView(BaseModel):
    id: str
    consumer: str
    """`tenant/name`: who owns it, manages it on the gateway and sees its deliveries."""
    tenant: str
    url: str
    description: str | None
    types: list[str]
    filter: dict[str, Any] | None
    rate_limit: float | None
    concurrency: int | None
    ordering: OrderingView | None
    source: str
    """`consumer` (the consumer API), `admin` (this API or the CLI) or `config` (the file)."""
    disabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    created_at: str
    updated_at: str


class IssuedEndpointView(EndpointView):
    secret: str
    """The signing secret (`whsec_...`): in this answer only, never again."""


class EndpointPage(Page[EndpointView]):
    pass


class _EndpointFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=4000)
    filter: dict[str, Any] | None = None
    """Conditions on the event's fields, all of which must hold
    (`{"data.total": {"gte": 100}}`)."""
    rate_limit: float | None = Field(None, gt=0, le=100_000)
    """Deliveries per second to this endpoint at most."""
    concurrency: int | None = Field(None, ge=1, le=10_000)
    """Deliveries in flight to this endpoint at most, per delivering process."""
    ordering: OrderingView | None = None
    """FIFO delivery per key."""


class EndpointCreation(_EndpointFields):
    consumer: str = Field(pattern=CONSUMER_PATTERN, max_length=400)
    """`tenant/name`, a consumer of the config: the endpoint's owner."""
    url: str = Field(min_length=1, max_length=2000)
    """`https://...` (`http` only where `events.delivery.allow_http` is on)."""
    types: list[Annotated[str, Field(pattern=TYPE_FILTER_PATTERN, max_length=200)]] = Field(
        default_factory=lambda: ["*"], min_length=1, max_length=100
    )
    """Event types delivered: names, `prefix.*` or `*`."""


class EndpointChanges(_EndpointFields):
    """Only the fields given change; `null` removes an optional one."""

    url: str | None = Field(None, min_length=1, max_length=2000)
    types: list[Annotated[str, Field(pattern=TYPE_FILTER_PATTERN, max_length=200)]] | None = Field(
        None, min_length=1, max_length=100
    )


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: int | None = Field(None, ge=0, le=MAX_OVERLAP)
    """Seconds the previous secrets keep signing beside the new one (default:
    `events.delivery.secret_overlap`)."""


class RotatedSecret(BaseModel):
    secret: str
    """The new signing secret: in this answer only."""
    previous_secrets_valid_until: str
    """Until then every delivery carries a signature of each secret."""


class Redelivery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: str = Field(min_length=1, max_length=64)
    """Deliveries that died at or after this moment (ISO 8601 with its offset, or a Unix
    time)."""
    until: str = Field(min_length=1, max_length=64)
    """... and before this one."""


class Redelivered(BaseModel):
    redelivered: int
    """Deliveries made pending again, due now."""


class DeliveryView(BaseModel):
    id: int
    event_id: str
    event_type: str
    endpoint_id: str
    consumer: str | None
    """The endpoint's owner (`null`: the endpoint was deleted since)."""
    status: DeliveryStatus
    attempts: int
    ordering_key: str | None
    published_at: str | None
    first_attempt_at: str | None
    next_attempt_at: str | None
    finished_at: str | None
    last_status: int | None
    last_error: str | None


class DeliveryPage(Page[DeliveryView]):
    pass


class AttemptView(BaseModel):
    id: int
    attempt: int
    at: str | None
    status: int | None
    """The receiver's HTTP status (`null`: no answer; see `error`)."""
    latency_ms: float | None
    response_headers: list[list[str]] | None
    response_body: str | None
    """The start of the response body (`events.delivery.response_body_limit`)."""
    error: str | None
    """The error class when there was no usable answer (`timeout`, `connection-refused`,
    a refused destination's reason...)."""
    outcome: str


class EventView(BaseModel):
    id: str
    type: str
    tenant: str | None
    publisher: str
    created_at: str
    payload: str
    """The body every endpoint receives, as signed and sent."""


class DeliveryDetail(DeliveryView):
    event: EventView | None
    attempt_log: list[AttemptView]
    """Every attempt, first first."""
