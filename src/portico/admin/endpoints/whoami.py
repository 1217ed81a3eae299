"""``GET /whoami``: the token a request carries, as the admin API sees it (role, tenant)."""

from __future__ import annotations

from datetime import UTC

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.endpoints.common import Caller, page_response

__all__ = ["router"]

router = APIRouter()


class Whoami(BaseModel):
    token_id: str
    role: str
    tenant: str | None
    """The one tenant the token sees; `null`: every tenant."""
    expires_at: str | None
    request_id: str


@router.get("/whoami", response_model=Whoami, summary="The calling token")
def whoami(request: Request, caller: Caller) -> Response:
    token = caller.token
    expires = None if token.expires_at is None else token.expires_at.astimezone(UTC).isoformat()
    found = Whoami(
        token_id=token.id,
        role=token.role.value,
        tenant=token.tenant,
        expires_at=expires,
        request_id=caller.request_id,
    )
    return page_response(found, request, None)
