"""A consumer's rate-limit usage and quotas, as ``portico usage`` shows them
(:func:`portico.policies.rate_limit.usage.consumer_usage`), read from where the gateways count:
Redis, or the one gateway process's memory."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import context_of
from portico.admin.endpoints.common import Caller, not_found, page_response
from portico.admin.state import config_now
from portico.policies.rate_limit.usage import consumer_usage

__all__ = ["router"]

router = APIRouter()


class LimitUsage(BaseModel):
    limit: str
    """The limit's name."""
    scope: str
    """Where it counts: `every route`, or the route or service it is kept for."""
    span: str
    used: int
    quota: int
    remaining: int
    resets_in: int
    """Seconds until the count falls."""


class ConsumerUsage(BaseModel):
    consumer: str
    limits: list[LimitUsage]


@router.get(
    "/tenants/{tenant}/consumers/{name}/usage",
    response_model=ConsumerUsage,
    summary="Get a consumer's rate-limit usage",
)
async def get_usage(request: Request, caller: Caller, tenant: str, name: str) -> Response:
    """Every rate limit or quota that counts this consumer: used, remaining, when it resets."""
    context = context_of(request)
    config = await config_now(context)
    spec = config.tenants.get(tenant)
    if spec is None or name not in spec.consumers or not caller.sees(tenant):
        raise not_found("consumer", f"{tenant}/{name}")
    consumer = f"{tenant}/{name}"
    rows = await consumer_usage(config, consumer, context.shared)
    usage = ConsumerUsage(
        consumer=consumer,
        limits=[
            LimitUsage(
                limit=r.limit,
                scope=r.scope,
                span=r.span,
                used=r.used,
                quota=r.quota,
                remaining=r.remaining,
                resets_in=r.resets_in,
            )
            for r in rows
        ],
    )
    return page_response(usage, request, None)
