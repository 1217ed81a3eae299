"""The audit log: every change made through the admin API and the command line, newest first,
with filters, cursor pagination, and an export as JSON lines (streamed, page by page, so a
long log never sits in memory). A tenant-scoped token reads its tenant's entries only."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from portico.admin.authentication import Principal, context_of
from portico.admin.endpoints.common import DEFAULT, Caller, Cursor, Limit, page_response
from portico.admin.pagination import Page, cursor_after, cursor_key, invalid, next_link
from portico.store.repositories import AuditEntry, AuditFilter, AuditLog

__all__ = ["router"]

router = APIRouter()

EXPORT_PAGE = 500
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
JSON_LINES = "application/x-ndjson"


class AuditEntryView(BaseModel):
    id: int
    at: str
    actor: str
    """`cli:<user>`, `admin-token:<id>` for the admin API, or `serve` for what a reload of
    the config applied."""
    role: str | None
    """The admin token's role (`null`: the command line)."""
    action: str
    """`api_key.create`, `api_key.rotate`, `api_key.revoke`, `signing_key.rotate`,
    `admin_token.create`, `admin_token.revoke`, `cache.purge`, `service.lifecycle`..."""
    entity: str
    """The id of what changed (an API key's id, a signing key's kid...)."""
    tenant: str | None
    request_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]


class AuditPage(Page[AuditEntryView]):
    pass


def _view(entry: AuditEntry) -> AuditEntryView:
    return AuditEntryView(
        id=entry.id,
        at=entry.at.astimezone(UTC).isoformat(),
        actor=entry.actor,
        role=entry.actor_role,
        action=entry.action,
        entity=entry.target,
        tenant=entry.tenant,
        request_id=entry.request_id,
        before=entry.before,
        after=entry.after,
        detail=entry.detail,
    )


Actor = Annotated[str | None, Query(description="Only changes by this actor.")]
Action = Annotated[str | None, Query(description="Only this action (`api_key.revoke`).")]
Entity = Annotated[str | None, Query(description="Only changes of this entity (its id).")]
Tenant = Annotated[str | None, Query(description="Only changes of this tenant's entities.")]
Since = Annotated[
    str | None,
    Query(
        description="At or after this moment (RFC 3339, with its offset).",
        json_schema_extra={"format": "date-time"},
    ),
]
Until = Annotated[
    str | None,
    Query(
        description="Before this moment (RFC 3339, with its offset).",
        json_schema_extra={"format": "date-time"},
    ),
]
Sort = Annotated[
    Literal["-at", "at"], Query(description="`-at` (newest first) or `at` (oldest first).")
]


def _moment(name: str, text: str | None) -> datetime | None:
    """An RFC 3339 date-time with its offset; a number or a local time is refused (a bare
    number would read as a Unix time, a time without offset as the server's zone)."""
    if text is None:
        return None
    try:
        if not _RFC3339.match(text):
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise invalid(
            f"/query/{name}", "an RFC 3339 date-time with its offset, e.g. 2026-01-31T12:00:00Z"
        ) from None
    return moment


def _filter(
    caller: Principal,
    actor: str | None,
    action: str | None,
    entity: str | None,
    tenant: str | None,
    since_text: str | None,
    until_text: str | None,
) -> AuditFilter | None:
    """The filter, with a tenant-scoped token's tenant imposed; ``None``: nothing can match."""
    since, until = _moment("since", since_text), _moment("until", until_text)
    scope = caller.token.tenant
    if scope is not None and tenant is not None and tenant != scope:
        return None
    return AuditFilter(
        actor=actor,
        action=action,
        target=entity,
        tenant=scope if scope is not None else tenant,
        since=since,
        until=until,
    )


def _order(sort: str) -> bool:
    return sort == "-at"


@router.get("/audit-log", response_model=AuditPage, summary="Query the audit log")
def list_audit_log(
    request: Request,
    caller: Caller,
    actor: Actor = None,
    action: Action = None,
    entity: Entity = None,
    tenant: Tenant = None,
    since: Since = None,
    until: Until = None,
    sort: Sort = "-at",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """Who changed what, when, from what to what (secrets redacted), with the request id."""
    newest_first = _order(sort)
    where = _filter(caller, actor, action, entity, tenant, since, until)
    after = None
    if cursor is not None:
        key = cursor_key(cursor, sort)
        if len(key) != 1 or not isinstance(key[0], int):
            raise invalid("/query/cursor", "not a cursor this API gave")
        after = key[0]
    entries: list[AuditEntry] = []
    if where is not None:
        log = AuditLog(context_of(request).database)
        entries = log.page(where, limit=limit + 1, after_id=after, newest_first=newest_first)
    more = len(entries) > limit
    entries = entries[:limit]
    following = cursor_after(sort, (entries[-1].id,)) if more and entries else None
    url = next_link(request, following)
    page = AuditPage(items=[_view(e) for e in entries], next_cursor=following, next=url)
    return page_response(page, request, url)


@router.get(
    "/audit-log/export",
    summary="Export the audit log as JSON lines",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One entry per line, as the list shows them",
            "content": {JSON_LINES: {"schema": {"type": "string"}}},
        }
    },
)
async def export_audit_log(
    request: Request,
    caller: Caller,
    actor: Actor = None,
    action: Action = None,
    entity: Entity = None,
    tenant: Tenant = None,
    since: Since = None,
    until: Until = None,
    sort: Sort = "at",
) -> StreamingResponse:
    """Every matching entry, oldest first by default, one JSON object per line, streamed."""
    newest_first = _order(sort)
    where = _filter(caller, actor, action, entity, tenant, since, until)
    log = AuditLog(context_of(request).database)

    async def lines() -> AsyncIterator[bytes]:
        if where is None:
            return
        after: int | None = None
        while True:
            entries = await run_in_threadpool(
                log.page, where, limit=EXPORT_PAGE, after_id=after, newest_first=newest_first
            )
            if not entries:
                return
            yield b"".join(
                json.dumps(_view(e).model_dump(mode="json"), separators=(",", ":")).encode() + b"\n"
                for e in entries
            )
            if len(entries) < EXPORT_PAGE:
                return
            after = entries[-1].id

    disposition = 'attachment; filename="portico-audit.jsonl"'
    return StreamingResponse(
        lines(),
        media_type=JSON_LINES,
        headers={"cache-control": "no-store", "content-disposition": disposition},
    )
