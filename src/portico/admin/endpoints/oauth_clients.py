"""OAuth 2.0 clients made through the admin API (``entities.source: store``): a consumer
becomes a client, or gets a new secret, and the answer shows the secret once.

Only the secret's SHA-256 is stored (``client_secret_sha256`` of the consumer's ``oauth``
section, what the token endpoint compares with); the secret itself is in this answer and nowhere
else: not in the store, the audit log or any later answer. Making one again replaces the secret
(the old one stops working when the answer comes). The change is an edit of the consumer: its
``If-Match``, its lock, the config's checks, one state revision and one audit entry.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.endpoints.common import Caller, IfMatch, entity_response, not_found
from portico.admin.endpoints.config import ConsumerView
from portico.admin.endpoints.edits import EntityName, apply_edit, consumer_edit, may_edit_consumer
from portico.config.entities import EntityDocument

__all__ = ["router"]

router = APIRouter()

SECRET_BYTES = 32


class OAuthClientCreation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        description="The client id (default: the consumer's current one, else `tenant-name`).",
    )
    introspect_any: StrictBool = Field(
        False, description="May introspect every client's tokens, not only its own."
    )


class IssuedOAuthClientView(BaseModel):
    client_id: str
    client_secret: str
    """Shown in this answer only: only its SHA-256 is stored."""
    consumer: str
    tenant: str
    revision: int
    """The state revision that made it."""


@router.post(
    "/tenants/{tenant}/consumers/{name}/oauth-client",
    status_code=201,
    response_model=IssuedOAuthClientView,
    summary="Make a consumer an OAuth client, with a new secret shown once",
    responses={201: {"description": "The client; its secret is in this answer only"}},
)
async def issue_oauth_client(
    request: Request,
    caller: Caller,
    tenant: EntityName,
    name: EntityName,
    body: Annotated[OAuthClientCreation | None, Body()] = None,
    if_match: IfMatch = None,
) -> Response:
    """A new client secret for the consumer (client credentials grant, `client_secret_basic`
    or `client_secret_post`): it replaces the one it had, and keeps its client id and its
    public keys (`private_key_jwt`). `If-Match` takes the consumer's `ETag`. Needs the operator
    role; a tenant-scoped token for its own tenant's consumers."""
    may_edit_consumer(caller, tenant, name)
    body = body or OAuthClientCreation()
    secret = secrets.token_urlsafe(SECRET_BYTES)
    issued: dict[str, Any] = {}

    def with_client(document: EntityDocument) -> dict[str, Any]:
        tenants = document.get("tenants") or {}
        found = tenants.get(tenant) if isinstance(tenants, dict) else None
        consumers = found.get("consumers") if isinstance(found, dict) else None
        consumer = consumers.get(name) if isinstance(consumers, dict) else None
        if not isinstance(consumer, dict):
            raise not_found("consumer", f"{tenant}/{name}")
        found_oauth = consumer.get("oauth")
        oauth: dict[str, Any] = found_oauth if isinstance(found_oauth, dict) else {}
        client_id = body.client_id or oauth.get("client_id") or f"{tenant}-{name}"
        kept = {k: v for k, v in oauth.items() if k in ("jwks", "jwks_uri")}
        issued["client_id"] = client_id
        return {
            **consumer,
            "oauth": {
                "client_id": client_id,
                "client_secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
                **kept,
                **({"introspect_any": True} if body.introspect_any else {}),
            },
        }

    change = consumer_edit(tenant, name, with_client)
    edited = await apply_edit(request, caller, change, if_match)
    assert isinstance(edited.after, ConsumerView)
    view = IssuedOAuthClientView(
        client_id=str(issued["client_id"]),
        client_secret=secret,
        consumer=f"{tenant}/{name}",
        tenant=tenant,
        revision=edited.revision.id,
    )
    path = request.url.path.split("/tenants/", 1)[0] + f"/oauth-clients/{view.client_id}"
    return entity_response(
        view,
        status=201,
        tag=edited.tag,
        location=path,
        **{"x-portico-state-revision": str(edited.revision.id)},
    )
