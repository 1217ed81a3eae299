"""Who calls the admin API: an admin token in ``Authorization: Bearer``, checked against the
store on every request (a revoked or expired token is refused at once, in every process).

Refused, without looking further:

- a request without ``Authorization``, or with another scheme: 401 ``unauthorized``;
- a token that is unknown, wrong, expired or revoked: 401 ``invalid-credentials``, the same
  answer whatever was wrong;
- two ``Authorization`` fields: 400 ``bad-request`` (which one counts would be a guess, and a
  proxy may read the other);
- credentials in the query string (an ``access_token`` parameter, or any value that is an
  admin token): 400 ``bad-request``, even with a valid header: URLs end up in logs and browser
  histories, and a token sent that way must be revoked, not accepted.

The scheme name is matched without case (RFC 9110 §11.1), the token exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from portico.admin.context import AdminContext
from portico.admin.problems import INSUFFICIENT_ROLE, TENANT_SCOPED, AdminProblem
from portico.admin.request_ids import request_id_of
from portico.admin.roles import Role
from portico.admin.tokens import TOKEN_PREFIX, AdminToken, AdminTokens
from portico.core.http import REALM
from portico.gateway import problems
from portico.store.repositories import Author

__all__ = ["CHALLENGE", "Principal", "authenticate", "context_of"]

CHALLENGE = f'Bearer realm="{REALM}"'
_INVALID = f'Bearer realm="{REALM}", error="invalid_token"'
_CREDENTIAL_PARAMETERS = frozenset(
    {"access_token", "token", "admin_token", "bearer", "authorization", "api_key", "apikey"}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The admin token of one request, and that request's id."""

    token: AdminToken
    request_id: str

    @property
    def role(self) -> Role:
        return self.token.role

    @property
    def author(self) -> Author:
        """How the audit log names this caller."""
        return Author(f"admin-token:{self.token.id}", self.role.value, self.request_id)

    def sees(self, tenant: str | None) -> bool:
        """Whether an entity of ``tenant`` exists for this token (``None``: of no tenant)."""
        scope = self.token.tenant
        return scope is None or tenant == scope

    def require(self, role: Role) -> None:
        if not self.role.allows(role):
            raise AdminProblem(
                INSUFFICIENT_ROLE,
                f"this needs the {role.value} role; the token has {self.role.value}",
            )

    def require_every_tenant(self) -> None:
        """What every tenant shares is not a tenant-scoped token's to see."""
        if self.token.tenant is not None:
            raise AdminProblem(TENANT_SCOPED, f"the token sees tenant {self.token.tenant} only")


def context_of(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.context
    return context


async def authenticate(request: Request) -> Principal:
    """The dependency of every endpoint but the document and its docs."""
    request_id = request_id_of(request)
    for name, value in request.query_params.multi_items():
        if name.lower() in _CREDENTIAL_PARAMETERS or TOKEN_PREFIX in value:
            raise AdminProblem(
                problems.BAD_REQUEST,
                "credentials are not accepted in the query string (URLs are logged): send "
                "Authorization: Bearer <token>, and revoke a token sent this way",
            )
    fields = request.headers.getlist("authorization")
    if len(fields) > 1:
        raise AdminProblem(problems.BAD_REQUEST, "the request has two Authorization fields")
    scheme, _, token = (fields[0] if fields else "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AdminProblem(
            problems.UNAUTHORIZED,
            "send an admin token: Authorization: Bearer <token>",
            headers={"www-authenticate": CHALLENGE},
        )
    context = context_of(request)
    found = await run_in_threadpool(
        AdminTokens(context.database).verify, token.strip(), datetime.now(UTC)
    )
    if found is None:
        raise AdminProblem(problems.INVALID_CREDENTIALS, headers={"www-authenticate": _INVALID})
    return Principal(found, request_id)
