"""Event types and publishing (docs/webhooks-operations.md, docs/admin-api.md#events).

- ``GET /event-types``: the catalog's types (every tenant's consumers subscribe to them, so a
  tenant-scoped token reads them too);
- ``POST /events``: publish as an operator (publisher ``admin:<token id>``), checked against
  the type's schema and committed with its deliveries before the ``202``. An event of a
  ``tenant`` goes only to that tenant's endpoints; without one it is a platform event, which
  a tenant-scoped token may not publish (its events are its tenant's). An ``Idempotency-Key``
  (or the body's ``id``) already used by the same token returns the original event, with
  ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import context_of
from portico.admin.catalog.events import EventTypeEntry, event_types
from portico.admin.endpoints.common import DEFAULT, Caller, Cursor, Limit, page_response
from portico.admin.pagination import Page, invalid, next_link, paginate
from portico.admin.problems import TENANT_SCOPED, AdminProblem
from portico.admin.roles import Role
from portico.admin.state import config_now
from portico.config.events import EVENT_TYPE_PATTERN
from portico.events.catalog import InvalidPayload, UnknownEventType
from portico.events.problems import EVENT_TYPE_UNKNOWN, PAYLOAD_INVALID
from portico.events.publishing import Published
from portico.gateway.problems import PROBLEM_CONTENT_TYPE
from portico.store.repositories import AuditLog

__all__ = ["EventTypeView", "router"]

router = APIRouter()

_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


class EventTypeView(BaseModel):
    name: str
    description: str
    version: str
    owner: str | None
    schema_: dict[str, Any] = Field(alias="schema")
    """The JSON Schema of the event's `data` (`{}`: any JSON value)."""
    operational: bool
    """Published by Portico itself (`endpoint.disabled`), never through this API."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    @classmethod
    def of(cls, entry: EventTypeEntry) -> EventTypeView:
        return cls.model_validate(entry.describe())


class EventTypePage(Page[EventTypeView]):
    pass


class EventPublication(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=200)
    """A type of the catalog (`GET /event-types`)."""
    data: Any = None
    """The payload, checked against the type's schema."""
    tenant: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", max_length=200)
    """Only this tenant's endpoints receive it; none: every subscribed endpoint (a platform
    event). A tenant-scoped token publishes for its tenant."""
    id: str | None = Field(None, min_length=1, max_length=200)
    """Your own id of the event: used as its idempotency key, as `Idempotency-Key` is."""


class PublishedEvent(BaseModel):
    id: str
    type: str
    timestamp: str


@router.get("/event-types", response_model=EventTypePage, summary="List the event types")
async def list_event_types(
    request: Request, caller: Caller, limit: Limit = DEFAULT, cursor: Cursor = None
) -> Response:
    """The types of the catalog by name, each with the JSON Schema of its `data`; Portico's own
    operational types (`endpoint.disabled`) among them, marked `operational`."""
    del caller  # any token reads the catalog: every tenant's consumers subscribe to it
    config = await config_now(context_of(request))
    entries = [EventTypeView.of(entry) for entry in event_types(config)]
    chosen, following = paginate(
        entries,
        lambda view: (view.name,),
        sort="name",
        descending=False,
        cursor=cursor,
        limit=limit,
    )
    url = next_link(request, following)
    return page_response(EventTypePage(items=chosen, next_cursor=following, next=url), request, url)


@router.post(
    "/events",
    status_code=202,
    response_model=PublishedEvent,
    summary="Publish an event",
    responses={
        202: {"description": "Committed with its deliveries (or the original, replayed)"},
        422: {
            "description": "An unknown event type (`event-type-unknown`), or data that does "
            "not match its schema (`payload-invalid`, with `errors`)",
            "content": _PROBLEM,
        },
    },
)
async def publish_event(
    request: Request,
    caller: Caller,
    body: EventPublication,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="A key of yours: the same key again (same token) returns the original "
            "event instead of publishing a second one.",
        ),
    ] = None,
) -> Response:
    """Check the data against its type's schema, and commit the event and one delivery per
    subscribed endpoint before answering."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    scope = caller.token.tenant
    tenant = body.tenant if body.tenant is not None else scope
    if scope is not None and tenant != scope:
        raise AdminProblem(TENANT_SCOPED, f"the token publishes for tenant {scope} only")
    config = await config_now(context)
    if tenant is not None and tenant not in config.tenants:
        raise invalid("/tenant", f"no tenant {tenant} in the config")
    key = idempotency_key if idempotency_key is not None else body.id
    publisher = f"admin:{caller.token.id}"

    def publish() -> Published:
        published = context.events.publisher.publish(
            body.type, body.data, publisher=publisher, tenant=tenant, idempotency_key=key
        )
        if published.created:
            AuditLog(context.database).record(
                caller.author,
                "event.publish",
                published.id,
                tenant=tenant,
                detail={
                    "type": published.type,
                    "deliveries": published.deliveries,
                    "idempotency_key": key,
                },
            )
        return published

    try:
        published = await run_in_threadpool(publish)
    except UnknownEventType as exc:
        message = str(exc)
        raise AdminProblem(
            EVENT_TYPE_UNKNOWN, message, errors=[{"pointer": "/type", "message": message}]
        ) from None
    except InvalidPayload as exc:
        errors = [{"pointer": e.pointer, "message": e.message} for e in exc.errors]
        raise AdminProblem(PAYLOAD_INVALID, str(exc), errors=errors) from None
    view = PublishedEvent(
        id=published.id, type=published.type, timestamp=published.timestamp.isoformat()
    )
    headers = {} if published.created else {"idempotent-replayed": "true"}
    return _accepted(view, request, headers)


def _accepted(view: BaseModel, request: Request, headers: dict[str, str]) -> Response:
    response = page_response(view, request, None, status=202)
    response.headers.update(headers)
    return response
