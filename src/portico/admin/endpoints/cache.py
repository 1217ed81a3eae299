"""Purging a route's cached responses (the ``cache`` policy, docs/caching.md#purging): in Redis,
or in the memory of the one gateway process this admin API runs beside, which no other
command can reach. What ``portico cache purge`` does, and what it asks here when the cache is
in memory."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import context_of
from portico.admin.endpoints.common import Caller, page_response
from portico.admin.problems import AdminProblem
from portico.admin.roles import Role
from portico.admin.state import config_now
from portico.gateway import problems
from portico.gateway.problems import PROBLEM_CONTENT_TYPE
from portico.policies.cache.purge import PurgeRefused, purge_prefixes
from portico.shared.state import SharedStateUnavailable
from portico.store.repositories import AuditLog

__all__ = ["router"]

router = APIRouter()


class CachePurge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str = Field(min_length=1, max_length=200)
    """The route whose stored responses go."""
    keys: list[str] = Field(default=[], max_length=100)
    """Paths as clients request them (`/products/42`): only theirs go, any query, consumer or
    variant. Empty: every entry of the route."""


class CachePurged(BaseModel):
    route: str
    keys: list[str]
    purged: int
    """Entries removed."""


_UNAVAILABLE = {
    "description": "Redis, where the cache is, did not answer (`shared-state-unavailable`)",
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


@router.post(
    "/cache/purge",
    response_model=CachePurged,
    summary="Purge cached responses",
    responses={503: _UNAVAILABLE},
)
async def purge_cache(request: Request, caller: Caller, body: CachePurge) -> Response:
    """Remove a route's stored responses, or those of some of its paths, in every gateway
    process at once (one audit entry)."""
    caller.require(Role.OPERATOR)
    caller.require_every_tenant()  # a route's entries are every tenant's
    context = context_of(request)
    config = await config_now(context)
    try:
        prefixes = purge_prefixes(config, body.route, body.keys)
    except PurgeRefused as refused:
        pointer = "/route" if refused.index is None else f"/keys/{refused.index}"
        raise AdminProblem(
            problems.VALIDATION_FAILED,
            refused.message,
            errors=[{"pointer": pointer, "message": refused.message}],
        ) from None
    try:
        removed = sum([await context.shared.delete_prefix(prefix) for prefix in prefixes])
    except SharedStateUnavailable as exc:
        raise AdminProblem(problems.SHARED_STATE_UNAVAILABLE, str(exc)) from None
    await run_in_threadpool(
        AuditLog(context.database).record,
        caller.author,
        "cache.purge",
        body.route,
        detail={"keys": body.keys, "purged": removed},
    )
    return page_response(
        CachePurged(route=body.route, keys=body.keys, purged=removed), request, None
    )
