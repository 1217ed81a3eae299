"""The admin API's errors: RFC 9457 problem documents, with the gateway's types where they mean
the same (``unauthorized``, ``invalid-credentials``, ``validation-failed``, ``route-not-found``,
``method-not-allowed``, ``internal-error``) and the admin API's own below (docs/errors.md).

An endpoint raises :class:`AdminProblem`; the application's handlers (:mod:`portico.admin.app`)
answer it, and answer FastAPI's and Starlette's own errors in the same format, so that their
default bodies (``{"detail": ...}``) never reach a client.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import Response

from portico.gateway.problems import PROBLEM_CONTENT_TYPE, ProblemType

__all__ = [
    "ENTITIES_FROM_FILE",
    "ENTITY_CONFLICT",
    "ENTITY_LOCKED",
    "ENTITY_NOT_FOUND",
    "INSUFFICIENT_ROLE",
    "PRECONDITION_FAILED",
    "TENANT_SCOPED",
    "TYPES",
    "AdminProblem",
    "problem_response",
]

ENTITY_NOT_FOUND = ProblemType("entity-not-found", 404, "No such entity")
INSUFFICIENT_ROLE = ProblemType(
    "insufficient-role", 403, "The admin token's role does not allow this"
)
TENANT_SCOPED = ProblemType(
    "tenant-scoped", 403, "The admin token is scoped to one tenant and this is not a tenant's"
)
ENTITY_CONFLICT = ProblemType(
    "entity-conflict", 409, "The entity's state or origin does not allow this change"
)
PRECONDITION_FAILED = ProblemType(
    "precondition-failed", 412, "The entity changed since the version the request names"
)

ENTITIES_FROM_FILE = ProblemType(
    "entities-from-file", 409, "The entities come from portico.yaml and change there"
)
ENTITY_LOCKED = ProblemType("entity-locked", 409, "The entity is managed by portico.yaml")

TYPES = (
    ENTITY_NOT_FOUND,
    INSUFFICIENT_ROLE,
    TENANT_SCOPED,
    ENTITY_CONFLICT,
    PRECONDITION_FAILED,
    ENTITIES_FROM_FILE,
    ENTITY_LOCKED,
)
"""The admin API's own types (it answers the gateway's shared ones too)."""


class AdminProblem(Exception):
    """An answer of the admin API that is a problem; ``extensions`` are extra members."""

    def __init__(
        self,
        kind: ProblemType,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    kind: ProblemType,
    request_id: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body: dict[str, Any] = {"type": kind.uri, "title": kind.title, "status": kind.status}
    if detail:
        body["detail"] = detail
    body["request_id"] = request_id
    body.update(extensions)
    out = {"cache-control": "no-store", "x-request-id": request_id, **(headers or {})}
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=kind.status,
        headers=out,
        media_type=PROBLEM_CONTENT_TYPE,
    )
