"""Candidate: FastAPI (Starlette, pydantic models) under uvicorn."""

from __future__ import annotations

from typing import Annotated

from _common import LIMIT, MAX_LIMIT, authorized, page, port, serve
from fastapi import FastAPI, Header, HTTPException, Query
from pydantic import BaseModel


class ConsumerOut(BaseModel):
    tenant: str
    name: str
    scopes: list[str]
    metadata: dict[str, str]


class ConsumerPage(BaseModel):
    items: list[ConsumerOut]
    next_cursor: str | None


app = FastAPI()


@app.get("/")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/admin/v1/consumers")
async def consumers(
    authorization: Annotated[str | None, Header()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = LIMIT,
    cursor: str | None = None,
) -> ConsumerPage:
    if not authorized(authorization):
        raise HTTPException(401)
    items, following = page(cursor, limit)
    return ConsumerPage(
        items=[
            ConsumerOut(tenant=c.tenant, name=c.name, scopes=list(c.scopes), metadata=c.metadata)
            for c in items
        ],
        next_cursor=following,
    )


if __name__ == "__main__":
    serve(app, port())
