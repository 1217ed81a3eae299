"""Candidate: Litestar (msgspec structs) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import msgspec
from _common import LIMIT, MAX_LIMIT, authorized, page, port, serve
from litestar import Litestar, get
from litestar.exceptions import NotAuthorizedException
from litestar.params import Parameter


class ConsumerOut(msgspec.Struct):
    tenant: str
    name: str
    scopes: list[str]
    metadata: dict[str, str]


class ConsumerPage(msgspec.Struct):
    items: list[ConsumerOut]
    next_cursor: str | None


@get("/")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@get("/admin/v1/consumers")
async def consumers(
    authorization: Annotated[str | None, Parameter(header="authorization")] = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = LIMIT,
    cursor: str | None = None,
) -> ConsumerPage:
    if not authorized(authorization):
        raise NotAuthorizedException()
    items, following = page(cursor, limit)
    return ConsumerPage(
        items=[
            ConsumerOut(tenant=c.tenant, name=c.name, scopes=list(c.scopes), metadata=c.metadata)
            for c in items
        ],
        next_cursor=following,
    )


app = Litestar([ready, consumers], openapi_config=None)


if __name__ == "__main__":
    serve(app, port())
