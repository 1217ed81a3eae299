"""The OAuth 2.0 server's signing keys: their public information, and rotation (as ``portico
oauth rotate-key``: the previous key keeps verifying the tokens it signed until they expire, or
drops out at once with ``drop_old_keys``). Every tenant depends on them: admin role, and no
tenant-scoped token."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictBool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import context_of
from portico.admin.endpoints.common import Caller, page_response
from portico.admin.pagination import Page
from portico.admin.problems import ENTITY_CONFLICT, AdminProblem
from portico.admin.roles import Role
from portico.identity.oauth.keys import SigningKey
from portico.identity.oauth.repository import SigningKeys
from portico.identity.oauth.state import retired_key_lifetime
from portico.store.database import Database
from portico.store.repositories import AuditLog

__all__ = ["router"]

router = APIRouter()


class SigningKeyView(BaseModel):
    kid: str
    alg: str
    state: Literal["signing", "pending", "retired"]
    created_at: str
    activated_at: str
    retired_at: str | None
    published_until: str | None
    """When it drops out of the JWKS (and its tokens stop verifying); ``null``: not scheduled."""


class SigningKeyPage(Page[SigningKeyView]):
    pass


class SigningKeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drop_old_keys: StrictBool = False
    """Unpublish the previous keys at once: the tokens they signed stop working (a key leaked)."""


class SigningKeyRotationResult(BaseModel):
    created: SigningKeyView
    retired: list[SigningKeyView]


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _view(key: SigningKey, now: datetime) -> SigningKeyView:
    state: Literal["signing", "pending", "retired"] = (
        "signing" if key.signs_at(now) else "pending" if key.activated_at > now else "retired"
    )
    return SigningKeyView(
        kid=key.kid,
        alg=key.algorithm,
        state=state,
        created_at=_when(key.created_at) or "",
        activated_at=_when(key.activated_at) or "",
        retired_at=_when(key.retired_at),
        published_until=_when(key.expires_at),
    )


@router.get("/signing-keys", response_model=SigningKeyPage, summary="List signing keys")
def list_signing_keys(request: Request, caller: Caller) -> Response:
    """The keys still published in the JWKS, newest first (public information only)."""
    caller.require_every_tenant()
    now = datetime.now(UTC)
    context = context_of(request)
    keys = SigningKeys(context.database, context.secrets).published(now)
    keys.sort(key=lambda k: (k.activated_at, k.kid), reverse=True)
    page = SigningKeyPage(items=[_view(k, now) for k in keys], next_cursor=None, next=None)
    return page_response(page, request, None)


@router.post(
    "/signing-keys/rotate",
    response_model=SigningKeyRotationResult,
    status_code=201,
    summary="Rotate the signing key",
)
async def rotate_signing_key(
    request: Request, caller: Caller, body: SigningKeyRotation | None = None
) -> Response:
    """Make a new key (of `identity.oauth.signing_algorithm`) the one that signs new tokens;
    every gateway process uses it within a second."""
    caller.require(Role.ADMIN)
    caller.require_every_tenant()
    body = body or SigningKeyRotation()
    context = context_of(request)
    settings = context.config().identity.oauth
    if settings is None:
        raise AdminProblem(
            ENTITY_CONFLICT,
            "the config has no identity.oauth section: Portico is not an authorization server",
        )
    lifetime = timedelta(0) if body.drop_old_keys else retired_key_lifetime(settings)

    def write(database: Database) -> Any:
        with database.write() as session:
            rotation = SigningKeys(session, context.secrets).rotate(
                settings.signing_algorithm, lifetime
            )
            assert rotation is not None
            now = datetime.now(UTC)
            AuditLog(session).record(
                caller.author,
                "signing_key.rotate",
                rotation.created.kid,
                after=_view(rotation.created, now).model_dump(),
                detail={
                    "retired": [k.kid for k in rotation.retired],
                    "drop_old_keys": body.drop_old_keys,
                },
            )
            return rotation

    rotation = await run_in_threadpool(write, context.database)
    await asyncio.sleep(context.settle)
    now = datetime.now(UTC)
    result = SigningKeyRotationResult(
        created=_view(rotation.created, now),
        retired=[_view(k, now) for k in rotation.retired],
    )
    return page_response(result, request, None, status=201)
