"""Webhook endpoints and their deliveries, as an operator manages them (docs/admin-api.md#webhooks,
docs/webhooks-operations.md): every consumer's, or a tenant-scoped token's tenant's only.

- endpoints: list, get, create for a consumer (the signing secret is in that answer only),
  change, delete, rotate the secret (the previous one keeps signing during the overlap),
  enable and disable; redeliver an endpoint's deliveries that died within a time range;
- deliveries (:mod:`~portico.admin.endpoints.webhook_deliveries`): list, get one with its event
  and every attempt, redeliver one that is dead.

An endpoint or delivery of a tenant the token does not see answers 404, as one that does not
exist: an id cannot be probed. The endpoints of the config file (``ep_cfg_...``, ``source:
config``) change in the file: changing, deleting or rotating one is 409 ``endpoint-read-only``;
an operator may still disable, enable and redeliver them. Every change is written to the audit
log (never a secret).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import Principal, context_of
from portico.admin.context import AdminContext
from portico.admin.endpoints.common import (
    DEFAULT,
    Caller,
    Cursor,
    IfMatch,
    IfNoneMatch,
    Limit,
    entity_response,
    page_response,
)
from portico.admin.endpoints.webhook_views import (
    EndpointChanges,
    EndpointCreation,
    EndpointPage,
    EndpointView,
    IssuedEndpointView,
    Redelivered,
    Redelivery,
    RotatedSecret,
    SecretRotation,
)
from portico.admin.pagination import (
    check_if_match,
    cursor_after,
    cursor_key,
    etag_of,
    invalid,
    next_link,
)
from portico.admin.problems import AdminProblem
from portico.admin.roles import Role
from portico.admin.state import config_now
from portico.config.model import PorticoConfig
from portico.events.endpoints import CONFIG_PREFIX, Endpoint, Endpoints, UnknownEndpoint
from portico.events.moments import MOMENT_HELP, InvalidMoment, parse_moment
from portico.events.problems import (
    DELIVERY_NOT_FOUND,
    ENDPOINT_NOT_FOUND,
    ENDPOINT_READ_ONLY,
    ENDPOINT_REFUSED,
)
from portico.events.registration import EndpointRefused, check_endpoint, store_changes
from portico.gateway.problems import PROBLEM_CONTENT_TYPE
from portico.store.repositories import AuditLog, StoreBinding

T = TypeVar("T")

__all__ = [
    "REDELIVERABLE",
    "DeliveryId",
    "delivery_not_found",
    "router",
    "time_range",
]

router = APIRouter()

DISABLED_BY_OPERATOR = "disabled by an operator"
DISABLED_IN_CONFIG = "disabled in the config"
REDELIVERABLE = ("dead", "cancelled")
_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "The URL breaks the SSRF rules, a type is not in the catalog, or the "
        "payload filter does not compile (`endpoint-refused`, with `errors` and the URL's "
        "`reason`)",
        "content": _PROBLEM,
    }
}
DeliveryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The delivery's id.")]


# -- helpers -------------------------------------------------------------------------------------


def _view(endpoint: Endpoint) -> EndpointView:
    return EndpointView.model_validate({**endpoint.describe(), "tenant": endpoint.tenant})


def _endpoint_not_found(endpoint_id: str) -> AdminProblem:
    return AdminProblem(ENDPOINT_NOT_FOUND, f"no webhook endpoint {endpoint_id}")


def delivery_not_found(delivery_id: int) -> AdminProblem:
    return AdminProblem(DELIVERY_NOT_FOUND, f"no webhook delivery {delivery_id}")


async def _visible_endpoint(context: AdminContext, caller: Principal, endpoint_id: str) -> Endpoint:
    try:
        endpoint = await run_in_threadpool(context.events.endpoints.get, endpoint_id)
    except UnknownEndpoint:
        raise _endpoint_not_found(endpoint_id) from None
    if not caller.sees(endpoint.tenant):
        raise _endpoint_not_found(endpoint_id)
    return endpoint


def _from_file(endpoint: Endpoint) -> bool:
    return endpoint.source == "config" or endpoint.id.startswith(CONFIG_PREFIX)


def _refuse_from_file(endpoint: Endpoint, what: str) -> None:
    if _from_file(endpoint):
        name = endpoint.id.removeprefix(CONFIG_PREFIX)
        raise AdminProblem(
            ENDPOINT_READ_ONLY,
            f"webhook endpoint {endpoint.id} is declared in portico.yaml "
            f"(events.endpoints.{name}): {what} it there",
        )


def _refused(exc: EndpointRefused) -> AdminProblem:
    errors = [{"pointer": r.pointer, "message": r.message} for r in exc.refusals]
    reasons = [r.reason for r in exc.refusals if r.reason is not None]
    extensions: dict[str, Any] = {"errors": errors}
    if reasons:
        extensions["reason"] = reasons[0]
    return AdminProblem(ENDPOINT_REFUSED, str(exc), **extensions)


def _check(
    context: AdminContext,
    url: str | None,
    types: list[str] | None,
    filter: dict[str, Any] | None,
) -> None:
    events = context.events
    try:
        check_endpoint(events.destinations(), events.catalog(), url=url, types=types, filter=filter)
    except EndpointRefused as exc:
        raise _refused(exc) from None


def _consumer_of(config: PorticoConfig, caller: Principal, consumer: str) -> str:
    tenant_name, _, name = consumer.partition("/")
    tenant = config.tenants.get(tenant_name)
    if tenant is None or name not in tenant.consumers or not caller.sees(tenant_name):
        raise invalid("/consumer", f"no consumer {consumer} in the config")
    return consumer


def _moment(pointer: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_moment(text)
    except InvalidMoment:
        raise invalid(pointer, f"{MOMENT_HELP}, e.g. 2026-01-31T12:00:00Z") from None


def time_range(
    where: str, since_text: str | None, until_text: str | None
) -> tuple[float | None, float | None]:
    since = _moment(f"{where}/since", since_text)
    until = _moment(f"{where}/until", until_text)
    if since is not None and until is not None and since >= until:
        raise invalid(f"{where}/until", "until must be later than since")
    return since, until


def _record(
    binding: StoreBinding,
    caller: Principal,
    action: str,
    target: str,
    *,
    tenant: str | None,
    before: EndpointView | None = None,
    after: EndpointView | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit entry: the endpoint's state before and after, which never holds a secret."""
    AuditLog(binding).record(
        caller.author,
        action,
        target,
        tenant=tenant,
        before=None if before is None else before.model_dump(mode="json"),
        after=None if after is None else after.model_dump(mode="json"),
        detail=detail or {},
    )


def _audited(
    context: AdminContext,
    caller: Principal,
    endpoint: Endpoint,
    action: str,
    change: Callable[[Endpoints], T],
    *,
    if_match: str | None = None,
    detail: dict[str, Any] | None = None,
) -> T:
    """Make ``change`` to ``endpoint`` and record its audit entry in one transaction: the state
    before and, when ``change`` returns the endpoint, after. ``If-Match`` is checked on the
    endpoint as it is in that transaction (412 when it changed since it was read).
    :class:`UnknownEndpoint` (removed meanwhile) is the 404 ``endpoint-not-found``."""
    try:
        with context.database.write() as session:
            endpoints = context.events.endpoints.bound(session)
            endpoint = endpoints.get(endpoint.id, lock=True)
            check_if_match(if_match, etag_of(_view(endpoint)))
            result = change(endpoints)
            after = _view(result) if isinstance(result, Endpoint) else None
            _record(
                session,
                caller,
                action,
                endpoint.id,
                tenant=endpoint.tenant,
                before=_view(endpoint),
                after=after,
                detail=detail,
            )
            return result
    except UnknownEndpoint:
        raise _endpoint_not_found(endpoint.id) from None


# -- endpoints -----------------------------------------------------------------------------------


@router.get("/webhook-endpoints", response_model=EndpointPage, summary="List webhook endpoints")
def list_webhook_endpoints(
    request: Request,
    caller: Caller,
    consumer: Annotated[
        str | None, Query(description="Only this consumer's (`tenant/name`).", max_length=400)
    ] = None,
    tenant: Annotated[
        str | None, Query(description="Only this tenant's consumers'.", max_length=200)
    ] = None,
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """Every consumer's endpoints by id (a tenant-scoped token: its tenant's), never a
    secret."""
    scope = caller.token.tenant
    after = None
    if cursor is not None:
        key = cursor_key(cursor, "id")
        if len(key) != 1 or not isinstance(key[0], str):
            raise invalid("/query/cursor", "not a cursor this API gave")
        after = key[0]
    found: list[Endpoint] = []
    if scope is None or tenant in (None, scope):
        found = context_of(request).events.endpoints.list(
            consumer=consumer,
            tenant=scope if scope is not None else tenant,
            after=after,
            limit=limit + 1,
        )
    more = len(found) > limit
    found = found[:limit]
    following = cursor_after("id", (found[-1].id,)) if more and found else None
    url = next_link(request, following)
    page = EndpointPage(items=[_view(e) for e in found], next_cursor=following, next=url)
    return page_response(page, request, url)


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=IssuedEndpointView,
    summary="Create a webhook endpoint",
    responses={201: {"description": "Created; its secret is in this answer only"}, **_REFUSED},
)
async def create_webhook_endpoint(
    request: Request, caller: Caller, body: EndpointCreation
) -> Response:
    """A new endpoint of a consumer of the config, with a new signing secret (shown once).
    Its URL is checked against the SSRF rules now, and its addresses again at every
    delivery."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    consumer = _consumer_of(await config_now(context), caller, body.consumer)
    _check(context, body.url, body.types, body.filter)

    def write() -> tuple[Endpoint, str]:
        with context.database.write() as session:
            return create(context.events.endpoints.bound(session), session)

    def create(endpoints: Endpoints, session: Session) -> tuple[Endpoint, str]:
        endpoint, secret = endpoints.create(
            consumer,
            body.url,
            types=body.types,
            description=body.description,
            filter=body.filter,
            rate_limit=body.rate_limit,
            concurrency=body.concurrency,
            ordering_key=None if body.ordering is None else body.ordering.key,
            source="admin",
        )
        _record(
            session,
            caller,
            "webhook_endpoint.create",
            endpoint.id,
            tenant=endpoint.tenant,
            after=_view(endpoint),
        )
        return endpoint, secret

    endpoint, secret = await run_in_threadpool(write)
    view = _view(endpoint)
    issued = IssuedEndpointView(secret=secret, **view.model_dump())
    return entity_response(
        issued,
        status=201,
        tag=etag_of(view),
        location=f"{request.url.path}/{endpoint.id}",
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}",
    response_model=EndpointView,
    summary="Get a webhook endpoint",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
async def get_webhook_endpoint(
    request: Request, caller: Caller, endpoint_id: str, if_none_match: IfNoneMatch = None
) -> Response:
    endpoint = await _visible_endpoint(context_of(request), caller, endpoint_id)
    return entity_response(_view(endpoint), if_none_match)


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    response_model=EndpointView,
    summary="Change a webhook endpoint",
    responses=_REFUSED,
)
async def update_webhook_endpoint(
    request: Request,
    caller: Caller,
    endpoint_id: str,
    body: EndpointChanges,
    if_match: IfMatch = None,
) -> Response:
    """Change the fields given (`null` removes an optional one); the secret stays."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    endpoint = await _visible_endpoint(context, caller, endpoint_id)
    _refuse_from_file(endpoint, "change")
    given = body.model_fields_set
    for required in ("url", "types"):
        if required in given and getattr(body, required) is None:
            raise invalid(f"/{required}", f"{required} cannot be removed, only changed")
    _check(
        context,
        body.url if "url" in given else None,
        body.types if "types" in given else None,
        body.filter if "filter" in given else None,
    )
    changes = store_changes(body, given)

    if not changes:
        check_if_match(if_match, etag_of(_view(endpoint)))
        return entity_response(_view(endpoint))
    after = await run_in_threadpool(
        _audited,
        context,
        caller,
        endpoint,
        "webhook_endpoint.update",
        lambda endpoints: endpoints.update(endpoint.id, changes),
        if_match=if_match,
    )
    return entity_response(_view(after))


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a webhook endpoint",
)
async def delete_webhook_endpoint(
    request: Request, caller: Caller, endpoint_id: str, if_match: IfMatch = None
) -> Response:
    """Remove the endpoint and its secrets; its pending deliveries are cancelled (they stay in
    the delivery log until the retention prunes them)."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    endpoint = await _visible_endpoint(context, caller, endpoint_id)
    _refuse_from_file(endpoint, "remove")

    await run_in_threadpool(
        _audited,
        context,
        caller,
        endpoint,
        "webhook_endpoint.delete",
        lambda endpoints: endpoints.delete(endpoint.id),
        if_match=if_match,
    )
    return Response(status_code=204, headers={"cache-control": "no-store"})


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=RotatedSecret,
    summary="Rotate a webhook endpoint's secret",
)
async def rotate_webhook_secret(
    request: Request,
    caller: Caller,
    endpoint_id: str,
    body: SecretRotation | None = None,
    if_match: IfMatch = None,
) -> Response:
    """A new signing secret (shown once); the previous ones keep signing beside it during the
    overlap, so the receiver switches at its own pace."""
    caller.require(Role.OPERATOR)
    body = body or SecretRotation()
    context = context_of(request)
    endpoint = await _visible_endpoint(context, caller, endpoint_id)
    _refuse_from_file(endpoint, "rotate its secret")
    overlap = (
        float(body.overlap)
        if body.overlap is not None
        else context.events.delivery().secret_overlap
    )

    until = datetime.now(UTC) + timedelta(seconds=overlap)
    secret = await run_in_threadpool(
        _audited,
        context,
        caller,
        endpoint,
        "webhook_endpoint.rotate_secret",
        lambda endpoints: endpoints.rotate(endpoint.id, overlap),
        if_match=if_match,
        detail={"overlap": overlap, "previous_secrets_valid_until": until.isoformat()},
    )
    rotated = RotatedSecret(secret=secret, previous_secrets_valid_until=until.isoformat())
    return page_response(rotated, request, None)


async def _set_disabled(
    request: Request,
    caller: Principal,
    endpoint_id: str,
    reason: str | None,
    if_match: str | None,
) -> Response:
    caller.require(Role.OPERATOR)
    context = context_of(request)
    endpoint = await _visible_endpoint(context, caller, endpoint_id)
    if reason is None and endpoint.disabled_reason == DISABLED_IN_CONFIG:
        _refuse_from_file(endpoint, "enable")
    if (reason is None) == endpoint.enabled:
        check_if_match(if_match, etag_of(_view(endpoint)))
        return entity_response(_view(endpoint))  # already so: nothing changes, nothing audited

    after = await run_in_threadpool(
        _audited,
        context,
        caller,
        endpoint,
        "webhook_endpoint.enable" if reason is None else "webhook_endpoint.disable",
        lambda endpoints: endpoints.set_disabled(endpoint.id, reason),
        if_match=if_match,
    )
    return entity_response(_view(after))


@router.post(
    "/webhook-endpoints/{endpoint_id}/disable",
    response_model=EndpointView,
    summary="Disable a webhook endpoint",
)
async def disable_webhook_endpoint(
    request: Request, caller: Caller, endpoint_id: str, if_match: IfMatch = None
) -> Response:
    """Its deliveries wait (nothing is lost) until it is enabled again."""
    return await _set_disabled(request, caller, endpoint_id, DISABLED_BY_OPERATOR, if_match)


@router.post(
    "/webhook-endpoints/{endpoint_id}/enable",
    response_model=EndpointView,
    summary="Enable a webhook endpoint",
)
async def enable_webhook_endpoint(
    request: Request, caller: Caller, endpoint_id: str, if_match: IfMatch = None
) -> Response:
    """Its waiting deliveries flow again; its failure period starts afresh."""
    return await _set_disabled(request, caller, endpoint_id, None, if_match)


@router.post(
    "/webhook-endpoints/{endpoint_id}/redeliver",
    response_model=Redelivered,
    summary="Redeliver an endpoint's dead deliveries",
)
async def redeliver_webhook_endpoint(
    request: Request, caller: Caller, endpoint_id: str, body: Redelivery
) -> Response:
    """Make the endpoint's deliveries that died (or were cancelled) within `[since, until)`
    pending again, due now, their attempts counted from zero."""
    caller.require(Role.OPERATOR)
    since, until = time_range("", body.since, body.until)
    context = context_of(request)
    endpoint = await _visible_endpoint(context, caller, endpoint_id)

    def write() -> int:
        count = context.events.queue.redeliver(
            endpoint_id=endpoint.id, since=since, until=until, now=time.time()
        )
        _record(
            context.database,
            caller,
            "webhook_endpoint.redeliver",
            endpoint.id,
            tenant=endpoint.tenant,
            detail={"since": body.since, "until": body.until, "redelivered": count},
        )
        return count

    count = await run_in_threadpool(write)
    return page_response(Redelivered(redelivered=count), request, None)
