"""Webhook deliveries, as an operator reads and redelivers them (docs/admin-api.md#webhooks):
list (by endpoint, status, event type, consumer, publishing time), get one with its event and
every attempt, redeliver one that is dead. A delivery of a tenant the token does not see answers
404, as one that does not exist."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import Principal, context_of
from portico.admin.endpoints.common import DEFAULT, Caller, Cursor, Limit, page_response
from portico.admin.endpoints.webhook_views import (
    AttemptView,
    DeliveryDetail,
    DeliveryPage,
    DeliveryStatus,
    DeliveryView,
    EventView,
)
from portico.admin.endpoints.webhooks import (
    REDELIVERABLE,
    DeliveryId,
    delivery_not_found,
    time_range,
)
from portico.admin.pagination import cursor_after, cursor_key, invalid, next_link
from portico.admin.problems import ENTITY_CONFLICT, AdminProblem
from portico.admin.roles import Role
from portico.events.log import DeliveryFilter
from portico.events.problems import DELIVERY_NOT_DEAD
from portico.store.repositories import AuditLog

__all__ = ["router"]

router = APIRouter()


def _delivery_view(found: dict[str, Any]) -> DeliveryView:
    return DeliveryView.model_validate(found)


def _tenant_of(found: dict[str, Any]) -> str | None:
    consumer = found.get("consumer")
    return None if consumer is None else str(consumer).partition("/")[0]


def _visible_delivery(caller: Principal, found: dict[str, Any] | None) -> bool:
    if found is None:
        return False
    tenant = _tenant_of(found)
    # The endpoint of a delivery may be gone: then only a token of every tenant sees it.
    return caller.token.tenant is None or (tenant is not None and caller.sees(tenant))


Since = Annotated[
    str | None,
    Query(
        description="Published at or after (ISO 8601 with its offset, or a Unix time).",
        max_length=64,
    ),
]
Until = Annotated[
    str | None,
    Query(
        description="Published before (ISO 8601 with its offset, or a Unix time).", max_length=64
    ),
]


@router.get("/webhook-deliveries", response_model=DeliveryPage, summary="List webhook deliveries")
def list_webhook_deliveries(
    request: Request,
    caller: Caller,
    endpoint_id: Annotated[str | None, Query(description="Only this endpoint's.")] = None,
    status: Annotated[
        DeliveryStatus | None,
        Query(description="Only deliveries in this state (`dead`: the dead letters)."),
    ] = None,
    event_type: Annotated[str | None, Query(description="Only events of this type.")] = None,
    consumer: Annotated[
        str | None, Query(description="Only the endpoints of this consumer (`tenant/name`).")
    ] = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The delivery log, newest first: every consumer's (a tenant-scoped token: its tenant's)."""
    start, end = time_range("/query", since, until)
    after = None
    if cursor is not None:
        key = cursor_key(cursor, "-id")
        if len(key) != 1 or not isinstance(key[0], int) or isinstance(key[0], bool):
            raise invalid("/query/cursor", "not a cursor this API gave")
        after = key[0]
    where = DeliveryFilter(
        endpoint_id=endpoint_id,
        consumer=consumer,
        tenant=caller.token.tenant,
        status=status,
        event_type=event_type,
        since=start,
        until=end,
    )
    found = context_of(request).events.delivery_log.deliveries(where, after=after, limit=limit + 1)
    more = len(found) > limit
    found = found[:limit]
    following = cursor_after("-id", (found[-1]["id"],)) if more and found else None
    url = next_link(request, following)
    items = [_delivery_view(d) for d in found]
    return page_response(DeliveryPage(items=items, next_cursor=following, next=url), request, url)


@router.get(
    "/webhook-deliveries/{delivery_id}",
    response_model=DeliveryDetail,
    summary="Get a webhook delivery with its attempts",
)
def get_webhook_delivery(request: Request, caller: Caller, delivery_id: DeliveryId) -> Response:
    """The delivery, its event (the body as sent) and every attempt: when, the receiver's
    status, headers and the start of its body, the latency, the error class."""
    log = context_of(request).events.delivery_log
    found = log.delivery(delivery_id)
    if found is None or not _visible_delivery(caller, found):
        raise delivery_not_found(delivery_id)
    event = log.event(found["event_id"])
    attempts = [AttemptView.model_validate(a) for a in log.attempts(delivery_id)]
    detail = DeliveryDetail(
        **_delivery_view(found).model_dump(),
        event=None if event is None else EventView.model_validate(event),
        attempt_log=attempts,
    )
    return page_response(detail, request, None)


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=DeliveryView,
    summary="Redeliver a dead delivery",
)
async def redeliver_webhook_delivery(
    request: Request, caller: Caller, delivery_id: DeliveryId
) -> Response:
    """Make a dead (or cancelled) delivery pending again, due now, its attempts counted from
    zero; anything else is 409 `delivery-not-dead`."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    events = context.events

    def write() -> dict[str, Any]:
        found = events.delivery_log.delivery(delivery_id)
        if found is None or not _visible_delivery(caller, found):
            raise delivery_not_found(delivery_id)
        if found["consumer"] is None:
            raise AdminProblem(
                ENTITY_CONFLICT,
                f"the endpoint of delivery {delivery_id} was deleted: there is nowhere to send it",
            )
        if found["status"] not in REDELIVERABLE or not events.queue.redeliver(
            delivery_ids=[delivery_id], now=time.time()
        ):
            raise AdminProblem(
                DELIVERY_NOT_DEAD,
                f"delivery {delivery_id} is {found['status']}: only a dead or cancelled "
                "delivery is redelivered",
            )
        AuditLog(context.database).record(
            caller.author,
            "webhook_delivery.redeliver",
            str(delivery_id),
            tenant=_tenant_of(found),
            before={"status": found["status"], "attempts": found["attempts"]},
            after={"status": "pending", "attempts": 0},
            detail={"endpoint_id": found["endpoint_id"], "event_id": found["event_id"]},
        )
        after = events.delivery_log.delivery(delivery_id)
        assert after is not None
        return after

    after = await run_in_threadpool(write)
    return page_response(_delivery_view(after), request, None)
