"""What every endpoint module uses: the caller, the list parameters, and single-entity answers
with their ``ETag``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portico.admin.authentication import Principal, authenticate
from portico.admin.pagination import DEFAULT_LIMIT, MAX_LIMIT, etag_of, not_modified
from portico.admin.problems import ENTITY_NOT_FOUND, AdminProblem

__all__ = [
    "Caller",
    "Cursor",
    "IfMatch",
    "IfNoneMatch",
    "Limit",
    "entity_response",
    "not_found",
]

Caller = Annotated[Principal, Depends(authenticate)]
Limit = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT}).")
]
Cursor = Annotated[
    str | None, Query(description="The `next_cursor` of the previous page.", max_length=2000)
]
IfMatch = Annotated[
    str | None,
    Header(description="The entity's `ETag` as read: the change is refused (412) if it changed."),
]
IfNoneMatch = Annotated[
    str | None, Header(description="An `ETag` already held: 304 while the entity is unchanged.")
]
DEFAULT = DEFAULT_LIMIT


def not_found(kind: str, name: str) -> AdminProblem:
    return AdminProblem(ENTITY_NOT_FOUND, f"no {kind} {name}")


def entity_response(
    entity: BaseModel,
    if_none_match: str | None = None,
    *,
    status: int = 200,
    tag: str | None = None,
    **headers: str,
) -> Response:
    """One entity as JSON with its ``ETag`` (304 when ``If-None-Match`` names it): ``tag``, or
    that of the representation."""
    etag = tag or etag_of(entity)
    out = {"etag": etag, "cache-control": "no-store", **headers}
    if status == 200 and not_modified(if_none_match, etag):
        return Response(status_code=304, headers=out)
    return JSONResponse(entity.model_dump(mode="json"), status_code=status, headers=out)


def page_response(
    page: BaseModel, request: Request, next_url: str | None, *, status: int = 200
) -> Response:
    """A list (or another answer that is not one entity), with the ``Link`` of its next page."""
    headers: dict[str, Any] = {"cache-control": "no-store"}
    if next_url is not None:
        headers["link"] = f'<{next_url}>; rel="next"'
    return JSONResponse(page.model_dump(mode="json"), status_code=status, headers=headers)
