"""API keys: list, get, create (the key is shown once), rotate (both work during the overlap)
and revoke, through the same code as ``portico keys`` (:mod:`portico.identity.key_changes`).

A change commits the key, the identity change counter and the audit entry together; every
gateway process polls that counter and refuses a revoked key within a second. The answer comes
two polls after the commit, so that a client that uses a new key, or tests a revoked one, at
once finds every gateway agreeing.

Keys declared in ``portico.yaml`` (by hash) are shown by ``GET /api-keys/{id}`` with ``source:
config`` and change only in the file: rotating or revoking one is 409 ``entity-conflict``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import Principal, context_of
from portico.admin.endpoints.common import (
    DEFAULT,
    Caller,
    Cursor,
    IfMatch,
    IfNoneMatch,
    Limit,
    entity_response,
    not_found,
    page_response,
)
from portico.admin.pagination import (
    Page,
    check_if_match,
    etag_of,
    invalid,
    next_link,
    paginate,
    parse_sort,
)
from portico.admin.problems import ENTITY_CONFLICT, AdminProblem
from portico.admin.roles import Role
from portico.admin.state import config_now, current_config
from portico.config.model import PorticoConfig
from portico.identity.key_changes import create_key, key_view, revoke_key, rotate_key
from portico.identity.store import ApiKeyNotFound, ApiKeyNotUsable, ApiKeys, StoredApiKey
from portico.store.database import Database

__all__ = ["router"]

router = APIRouter()

MAX_LIFETIME = 10 * 366 * 86400
MAX_OVERLAP = 30 * 86400
Status = Literal["active", "rotated", "expired", "revoked"]


class ApiKeyView(BaseModel):
    id: str
    consumer: str
    tenant: str
    source: Literal["database", "config"]
    status: Status
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None
    rotated_to: str | None
    overlap_until: str | None
    valid_until: str | None
    """When it stops working: its expiry, the end of its rotation overlap, or its revocation."""


class IssuedApiKeyView(ApiKeyView):
    key: str
    """The key itself: shown in this answer only, never again."""


class ApiKeyPage(Page[ApiKeyView]):
    pass


class ApiKeyCreation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consumer: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        description="`tenant/name`, a consumer of the config.",
    )
    expires_in: int | None = Field(
        None, ge=1, le=MAX_LIFETIME, description="Lifetime in seconds (default: no expiry)."
    )


class ApiKeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap: int = Field(
        86400, ge=0, le=MAX_OVERLAP, description="Seconds the old key keeps working."
    )
    expires_in: int | None = Field(
        None,
        ge=1,
        le=MAX_LIFETIME,
        description="Lifetime of the new key in seconds (default: the old key's lifetime).",
    )


class ApiKeyRotationResult(BaseModel):
    old: ApiKeyView
    new: IssuedApiKeyView


def _view(key: StoredApiKey, now: datetime) -> ApiKeyView:
    shown = key_view(key, now)
    return ApiKeyView(tenant=key.consumer.partition("/")[0], source="database", **shown)


def _declared(config: PorticoConfig, key_id: str, now: datetime) -> ApiKeyView | None:
    for tenant_name, tenant in config.tenants.items():
        for name, consumer in tenant.consumers.items():
            for ref in consumer.api_keys:
                if ref.id != key_id:
                    continue
                expires = ref.expires_at
                expired = expires is not None and expires <= now
                when = None if expires is None else expires.astimezone(UTC).isoformat()
                return ApiKeyView(
                    id=ref.id,
                    consumer=f"{tenant_name}/{name}",
                    tenant=tenant_name,
                    source="config",
                    status="expired" if expired else "active",
                    created_at=None,
                    expires_at=when,
                    revoked_at=None,
                    rotated_to=None,
                    overlap_until=None,
                    valid_until=when,
                )
    return None


def _visible(caller: Principal, key: StoredApiKey | ApiKeyView | None) -> bool:
    return key is not None and caller.sees(key.consumer.partition("/")[0])


def _precondition(caller: Principal, if_match: str | None) -> Callable[[StoredApiKey], None]:
    """Inside the write transaction, on the key locked: it must be the caller's to see, and
    still the version ``If-Match`` names."""

    def check(key: StoredApiKey) -> None:
        if not _visible(caller, key):
            raise not_found("API key", key.id)
        check_if_match(if_match, etag_of(_view(key, datetime.now(UTC))))

    return check


async def _refuse_declared(request: Request, caller: Principal, key_id: str) -> None:
    config = await config_now(context_of(request))
    declared = _declared(config, key_id, datetime.now(UTC))
    if declared is not None and _visible(caller, declared):
        raise AdminProblem(
            ENTITY_CONFLICT,
            f"API key {key_id} is declared in the config (consumer {declared.consumer}): "
            "change it there",
        )


async def _settle(request: Request) -> None:
    await asyncio.sleep(context_of(request).settle)


@router.get("/api-keys", response_model=ApiKeyPage, summary="List API keys")
def list_api_keys(
    request: Request,
    caller: Caller,
    consumer: Annotated[
        str | None, Query(description="Only this consumer's (`tenant/name`).")
    ] = None,
    tenant: Annotated[str | None, Query(description="Only this tenant's consumers' keys.")] = None,
    status: Annotated[Status | None, Query(description="Only keys in this state now.")] = None,
    sort: Annotated[
        Literal["created_at", "-created_at", "id", "-id", "consumer", "-consumer"],
        Query(description="`created_at`, `id` or `consumer`; `-` before it: descending."),
    ] = "created_at",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The keys made with the API or `portico keys` (never the keys themselves, nor their
    hashes); those declared in the config are on their consumer."""
    field, descending = parse_sort(sort, ["created_at", "id", "consumer"])
    now = datetime.now(UTC)
    stored = ApiKeys(context_of(request).database).list(consumer)
    items = [
        view
        for view in (_view(key, now) for key in stored if _visible(caller, key))
        if (tenant is None or view.tenant == tenant) and (status is None or view.status == status)
    ]
    keys: dict[str, Callable[[ApiKeyView], Any]] = {
        "created_at": lambda k: k.created_at,
        "id": lambda k: k.id,
        "consumer": lambda k: k.consumer,
    }
    chosen, following = paginate(
        items,
        lambda k: (keys[field](k), k.id),
        sort=sort,
        descending=descending,
        cursor=cursor,
        limit=limit,
    )
    url = next_link(request, following)
    return page_response(ApiKeyPage(items=chosen, next_cursor=following, next=url), request, url)


@router.get(
    "/api-keys/{key_id}",
    response_model=ApiKeyView,
    summary="Get an API key",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_api_key(
    request: Request, caller: Caller, key_id: str, if_none_match: IfNoneMatch = None
) -> Response:
    now = datetime.now(UTC)
    context = context_of(request)
    stored = ApiKeys(context.database).get(key_id)
    view = (
        _view(stored, now)
        if stored is not None
        else _declared(current_config(context), key_id, now)
    )
    if view is None or not _visible(caller, view):
        raise not_found("API key", key_id)
    return entity_response(view, if_none_match)


@router.post(
    "/api-keys",
    status_code=201,
    response_model=IssuedApiKeyView,
    summary="Create an API key",
    responses={201: {"description": "Created; the key is in this answer only"}},
)
async def create_api_key(request: Request, caller: Caller, body: ApiKeyCreation) -> Response:
    """A new key for a consumer of the config. The answer holds the key: it is shown once."""
    caller.require(Role.OPERATOR)
    context = context_of(request)
    tenant_name, _, name = body.consumer.partition("/")
    tenant = (await config_now(context)).tenants.get(tenant_name)
    if tenant is None or name not in tenant.consumers or not caller.sees(tenant_name):
        raise invalid("/consumer", f"no consumer {body.consumer} in the config")
    now = datetime.now(UTC)
    expires_at = None if body.expires_in is None else now + timedelta(seconds=body.expires_in)

    def write(database: Database) -> Any:
        with database.write() as session:
            return create_key(session, body.consumer, caller.author, expires_at=expires_at, now=now)

    issued = await run_in_threadpool(write, context.database)
    await _settle(request)
    view = IssuedApiKeyView(key=issued.key, **_view(issued.stored, now).model_dump())
    return entity_response(
        view,
        status=201,
        location=f"{request.url.path}/{issued.stored.id}",
        etag=etag_of(_view(issued.stored, now)),
    )


@router.post(
    "/api-keys/{key_id}/rotate",
    status_code=201,
    response_model=ApiKeyRotationResult,
    summary="Rotate an API key",
    responses={
        201: {
            "description": "The new key (shown once), and the old one: it works until the "
            "overlap ends"
        }
    },
)
async def rotate_api_key(
    request: Request,
    caller: Caller,
    key_id: str,
    body: ApiKeyRotation | None = None,
    if_match: IfMatch = None,
) -> Response:
    """Replace the key with a new one of the same consumer; both work during `overlap`."""
    caller.require(Role.OPERATOR)
    body = body or ApiKeyRotation()
    await _refuse_declared(request, caller, key_id)
    context = context_of(request)
    lifetime = None if body.expires_in is None else timedelta(seconds=body.expires_in)

    def write(database: Database) -> Any:
        with database.write() as session:
            return rotate_key(
                session,
                key_id,
                caller.author,
                overlap=timedelta(seconds=body.overlap),
                lifetime=lifetime,
                precondition=_precondition(caller, if_match),
            )

    try:
        old, issued = await run_in_threadpool(write, context.database)
    except ApiKeyNotFound:
        raise not_found("API key", key_id) from None
    except ApiKeyNotUsable as exc:
        raise AdminProblem(ENTITY_CONFLICT, str(exc)) from None
    await _settle(request)
    now = datetime.now(UTC)
    new = IssuedApiKeyView(key=issued.key, **_view(issued.stored, now).model_dump())
    result = ApiKeyRotationResult(old=_view(old, now), new=new)
    path = request.url.path.rsplit("/", 2)[0]
    return entity_response(
        result,
        status=201,
        location=f"{path}/{issued.stored.id}",
        etag=etag_of(_view(issued.stored, now)),
    )


@router.post("/api-keys/{key_id}/revoke", response_model=ApiKeyView, summary="Revoke an API key")
async def revoke_api_key(
    request: Request, caller: Caller, key_id: str, if_match: IfMatch = None
) -> Response:
    """Make the key stop working in every gateway process (within a second; this answer comes
    once they agree). Revoking a revoked key changes nothing."""
    caller.require(Role.OPERATOR)
    await _refuse_declared(request, caller, key_id)
    context = context_of(request)

    def write(database: Database) -> tuple[StoredApiKey, StoredApiKey]:
        with database.write() as session:
            return revoke_key(
                session, key_id, caller.author, precondition=_precondition(caller, if_match)
            )

    try:
        before, after = await run_in_threadpool(write, context.database)
    except ApiKeyNotFound:
        raise not_found("API key", key_id) from None
    if before.revoked_at is None:
        await _settle(request)
    return entity_response(_view(after, datetime.now(UTC)))
