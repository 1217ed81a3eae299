"""The entities of the config the gateways serve, read-only here: services, routes (with their
policies), tenants, consumers, OAuth clients.

They are read from the running config, as the last reload applied it; they change by editing
``portico.yaml`` (a later release makes admin edits new config revisions). Secrets in them are
never shown (:func:`portico.core.redaction.redact`; a consumer's credentials are shown by id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import Principal, context_of
from portico.admin.endpoints.common import (
    DEFAULT,
    Caller,
    Cursor,
    IfNoneMatch,
    Limit,
    entity_response,
    not_found,
    page_response,
)
from portico.admin.pagination import Page, next_link, paginate, parse_sort
from portico.admin.state import (
    current_config,
    current_state,
    entity_tag,
    written_consumer,
    written_route,
    written_service,
    written_tenant,
)
from portico.config.model import Consumer, PolicySpec, PorticoConfig, Route, Service, Tenant
from portico.core.redaction import redact
from portico.policies.registry import effective_policies

__all__ = ["router"]

router = APIRouter()
T = TypeVar("T", bound=BaseModel)


# -- representations -----------------------------------------------------------------------------


class TargetView(BaseModel):
    url: str
    weight: int


class ServiceView(BaseModel):
    name: str
    targets: list[TargetView]
    balancer: str
    retries: int
    timeouts: dict[str, float]
    health_check: dict[str, Any]
    circuit_breaker: dict[str, Any] | None
    policies: list[dict[str, Any]]
    """The service's own policy entries, which its routes run first; secrets redacted."""
    openapi: bool
    """Whether the service names an OpenAPI document."""
    routes: list[str]
    locked: bool
    """Managed by portico.yaml only: the admin API refuses to change it (docs/sync.md)."""


class RouteMatchView(BaseModel):
    path: str
    methods: list[str]
    hosts: list[str]
    headers: dict[str, str]


class RouteView(BaseModel):
    name: str
    service: str
    match: RouteMatchView
    strip_prefix: str | None
    upstream_path: str | None
    preserve_host: bool
    websocket: bool
    max_body_size: int | None
    policies: list[dict[str, Any]]
    """The route's own entries, as written; secrets redacted."""
    effective_policies: list[dict[str, Any]]
    """What the route runs, in order: its service's entries first (those of a type the route
    does not have itself), then its own."""
    locked: bool


class TenantView(BaseModel):
    name: str
    metadata: dict[str, str]
    consumers: list[str]
    locked: bool


class ApiKeyRefView(BaseModel):
    id: str
    expires_at: str | None


class SignatureKeyView(BaseModel):
    keyid: str
    algorithm: str


class ConsumerView(BaseModel):
    id: str
    """``tenant/name``, as the gateway names it upstream (``X-Portico-Consumer``)."""
    tenant: str
    name: str
    scopes: list[str]
    metadata: dict[str, str]
    api_keys: list[ApiKeyRefView]
    """Keys declared in the config (by hash); keys made with the API or ``portico keys``
    are under ``/api-keys``."""
    oauth_client_id: str | None
    signature_keys: list[SignatureKeyView]
    certificates: list[dict[str, str]]
    ip_rules: dict[str, list[str]]
    locked: bool


class OAuthClientView(BaseModel):
    client_id: str
    consumer: str
    tenant: str
    authentication: list[str]
    """How the client authenticates: ``client_secret`` and/or ``private_key_jwt``."""
    jwks_uri: str | None
    introspect_any: bool


class ServicePage(Page[ServiceView]):
    pass


class RoutePage(Page[RouteView]):
    pass


class TenantPage(Page[TenantView]):
    pass


class ConsumerPage(Page[ConsumerView]):
    pass


class OAuthClientPage(Page[OAuthClientView]):
    pass


def _policy(spec: PolicySpec) -> dict[str, Any]:
    return dict(redact(spec.model_dump(mode="json")))


def service_view(config: PorticoConfig, name: str, spec: Service) -> ServiceView:
    return ServiceView(
        name=name,
        targets=[TargetView(url=str(redact(t.url)), weight=t.weight) for t in spec.targets],
        balancer=spec.balancer,
        retries=spec.retries,
        timeouts=spec.timeouts.model_dump(mode="json"),
        health_check=spec.health_check.model_dump(mode="json"),
        circuit_breaker=(
            None if spec.circuit_breaker is None else spec.circuit_breaker.model_dump(mode="json")
        ),
        policies=[_policy(p) for p in spec.policies],
        openapi=spec.openapi is not None,
        routes=[r.name for r in config.routes if r.service == name],
        locked=spec.locked,
    )


def route_view(config: PorticoConfig, route: Route) -> RouteView:
    match = route.match
    return RouteView(
        name=route.name,
        service=route.service,
        match=RouteMatchView(
            path=match.path,
            methods=list(match.methods),
            hosts=list(match.hosts),
            headers=dict(redact(dict(match.headers))),
        ),
        strip_prefix=route.strip_prefix,
        upstream_path=route.upstream_path,
        preserve_host=route.preserve_host,
        websocket=route.websocket,
        max_body_size=route.max_body_size,
        policies=[_policy(p) for p in route.policies],
        effective_policies=[_policy(p) for p in effective_policies(config, route)],
        locked=route.locked,
    )


def tenant_view(name: str, spec: Tenant) -> TenantView:
    return TenantView(
        name=name, metadata=dict(spec.metadata), consumers=list(spec.consumers), locked=spec.locked
    )


def consumer_view(tenant: str, name: str, spec: Consumer) -> ConsumerView:
    return ConsumerView(
        id=f"{tenant}/{name}",
        tenant=tenant,
        name=name,
        scopes=list(spec.scopes),
        metadata=dict(spec.metadata),
        api_keys=[
            ApiKeyRefView(
                id=ref.id, expires_at=None if ref.expires_at is None else ref.expires_at.isoformat()
            )
            for ref in spec.api_keys
        ],
        oauth_client_id=None if spec.oauth is None else spec.oauth.client_id,
        signature_keys=[
            SignatureKeyView(keyid=k.keyid, algorithm=k.algorithm) for k in spec.signature_keys
        ],
        certificates=[
            {"sha256_fingerprint": c.sha256_fingerprint}
            if c.sha256_fingerprint is not None
            else {"subject": c.subject or ""}
            for c in spec.certificates
        ],
        ip_rules={"allow": list(spec.ip_rules.allow), "deny": list(spec.ip_rules.deny)},
        locked=spec.locked,
    )


def _consumers(config: PorticoConfig, caller: Principal) -> list[ConsumerView]:
    return [
        consumer_view(tenant_name, name, spec)
        for tenant_name, tenant in config.tenants.items()
        if caller.sees(tenant_name)
        for name, spec in tenant.consumers.items()
    ]


def _oauth_clients(config: PorticoConfig, caller: Principal) -> list[OAuthClientView]:
    found = []
    for tenant_name, tenant in config.tenants.items():
        if not caller.sees(tenant_name):
            continue
        for name, consumer in tenant.consumers.items():
            spec = consumer.oauth
            if spec is None:
                continue
            methods = []
            if spec.client_secret is not None or spec.client_secret_sha256 is not None:
                methods.append("client_secret")
            if spec.jwks is not None or spec.jwks_uri is not None:
                methods.append("private_key_jwt")
            found.append(
                OAuthClientView(
                    client_id=spec.client_id,
                    consumer=f"{tenant_name}/{name}",
                    tenant=tenant_name,
                    authentication=methods,
                    jwks_uri=spec.jwks_uri,
                    introspect_any=spec.introspect_any,
                )
            )
    return found


def _page(
    request: Request,
    items: Sequence[T],
    keys: dict[str, Callable[[T], Any]],
    id_of: Callable[[T], str],
    sort: str,
    cursor: str | None,
    limit: int,
    page_type: type[Page[T]],
) -> Response:
    field, descending = parse_sort(sort, list(keys))
    chosen, following = paginate(
        items,
        lambda item: (keys[field](item), id_of(item)),
        sort=sort,
        descending=descending,
        cursor=cursor,
        limit=limit,
    )
    url = next_link(request, following)
    return page_response(page_type(items=chosen, next_cursor=following, next=url), request, url)


def _config(request: Request) -> PorticoConfig:
    # With entities.source: store, the store's latest revision: a client reads what it wrote.
    return current_config(context_of(request))


_SORT = Query(description="A documented field; `-field` sorts descending.")
ByName = Annotated[Literal["name", "-name"], _SORT]
RouteSort = Annotated[Literal["name", "-name", "service", "-service", "path", "-path"], _SORT]
ConsumerSort = Annotated[Literal["id", "-id", "tenant", "-tenant", "name", "-name"], _SORT]
ClientSort = Annotated[Literal["client_id", "-client_id", "consumer", "-consumer"], _SORT]

# -- services -------------------------------------------------------------------------------------


@router.get("/services", response_model=ServicePage, summary="List services")
def list_services(
    request: Request,
    caller: Caller,
    balancer: Annotated[
        Literal["round_robin", "least_connections"] | None,
        Query(description="Only services with this balancer."),
    ] = None,
    sort: ByName = "name",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The services of the running config. Sort by `name`. Every tenant's: a tenant-scoped
    token gets 403."""
    caller.require_every_tenant()
    config = _config(request)
    items = [
        service_view(config, name, spec)
        for name, spec in config.services.items()
        if balancer is None or spec.balancer == balancer
    ]
    keys: dict[str, Callable[[ServiceView], Any]] = {"name": lambda s: s.name}
    return _page(request, items, keys, lambda s: s.name, sort, cursor, limit, ServicePage)


@router.get(
    "/services/{name}",
    response_model=ServiceView,
    summary="Get a service",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_service(
    request: Request, caller: Caller, name: str, if_none_match: IfNoneMatch = None
) -> Response:
    caller.require_every_tenant()
    config, written = current_state(context_of(request))
    spec = config.services.get(name)
    if spec is None:
        raise not_found("service", name)
    view = service_view(config, name, spec)
    tag = entity_tag(view, written_service(written, name) if written is not None else None)
    return entity_response(view, if_none_match, tag=tag)


# -- routes ---------------------------------------------------------------------------------------


@router.get("/routes", response_model=RoutePage, summary="List routes")
def list_routes(
    request: Request,
    caller: Caller,
    service: Annotated[str | None, Query(description="Only the routes of this service.")] = None,
    policy: Annotated[
        str | None, Query(description="Only routes that run a policy of this type.")
    ] = None,
    sort: RouteSort = "name",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The routes of the running config, with their policies. Sort by `name`, `service` or
    `path`. Every tenant's: a tenant-scoped token gets 403."""
    caller.require_every_tenant()
    config = _config(request)
    items = [
        route_view(config, route)
        for route in config.routes
        if (service is None or route.service == service)
        and (policy is None or any(p.type == policy for p in effective_policies(config, route)))
    ]
    keys: dict[str, Callable[[RouteView], Any]] = {
        "name": lambda r: r.name,
        "service": lambda r: r.service,
        "path": lambda r: r.match.path,
    }
    return _page(request, items, keys, lambda r: r.name, sort, cursor, limit, RoutePage)


@router.get(
    "/routes/{name}",
    response_model=RouteView,
    summary="Get a route",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_route(
    request: Request, caller: Caller, name: str, if_none_match: IfNoneMatch = None
) -> Response:
    caller.require_every_tenant()
    config, written = current_state(context_of(request))
    found = next((r for r in config.routes if r.name == name), None)
    if found is None:
        raise not_found("route", name)
    view = route_view(config, found)
    tag = entity_tag(view, written_route(written, name) if written is not None else None)
    return entity_response(view, if_none_match, tag=tag)


# -- tenants and consumers ------------------------------------------------------------------------


@router.get("/tenants", response_model=TenantPage, summary="List tenants")
def list_tenants(
    request: Request,
    caller: Caller,
    sort: ByName = "name",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The tenants of the running config (a tenant-scoped token: its own). Sort by `name`."""
    config = _config(request)
    items = [tenant_view(name, t) for name, t in config.tenants.items() if caller.sees(name)]
    keys: dict[str, Callable[[TenantView], Any]] = {"name": lambda t: t.name}
    return _page(request, items, keys, lambda t: t.name, sort, cursor, limit, TenantPage)


@router.get(
    "/tenants/{tenant}",
    response_model=TenantView,
    summary="Get a tenant",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_tenant(
    request: Request, caller: Caller, tenant: str, if_none_match: IfNoneMatch = None
) -> Response:
    config, written = current_state(context_of(request))
    spec = config.tenants.get(tenant)
    if spec is None or not caller.sees(tenant):
        raise not_found("tenant", tenant)
    view = tenant_view(tenant, spec)
    tag = entity_tag(view, written_tenant(written, tenant) if written is not None else None)
    return entity_response(view, if_none_match, tag=tag)


@router.get("/consumers", response_model=ConsumerPage, summary="List consumers")
def list_consumers(
    request: Request,
    caller: Caller,
    tenant: Annotated[str | None, Query(description="Only this tenant's consumers.")] = None,
    scope: Annotated[str | None, Query(description="Only consumers granted this scope.")] = None,
    sort: ConsumerSort = "id",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """Every consumer of every tenant the token sees. Sort by `id`, `tenant` or `name`."""
    items = [
        c
        for c in _consumers(_config(request), caller)
        if (tenant is None or c.tenant == tenant) and (scope is None or scope in c.scopes)
    ]
    keys: dict[str, Callable[[ConsumerView], Any]] = {
        "id": lambda c: c.id,
        "tenant": lambda c: c.tenant,
        "name": lambda c: c.name,
    }
    return _page(request, items, keys, lambda c: c.id, sort, cursor, limit, ConsumerPage)


@router.get(
    "/tenants/{tenant}/consumers/{name}",
    response_model=ConsumerView,
    summary="Get a consumer",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_consumer(
    request: Request, caller: Caller, tenant: str, name: str, if_none_match: IfNoneMatch = None
) -> Response:
    config, written = current_state(context_of(request))
    spec = config.tenants.get(tenant)
    consumer = spec.consumers.get(name) if spec is not None else None
    if consumer is None or not caller.sees(tenant):
        raise not_found("consumer", f"{tenant}/{name}")
    view = consumer_view(tenant, name, consumer)
    found = written_consumer(written, tenant, name) if written is not None else None
    return entity_response(view, if_none_match, tag=entity_tag(view, found))


# -- OAuth clients --------------------------------------------------------------------------------


@router.get("/oauth-clients", response_model=OAuthClientPage, summary="List OAuth clients")
def list_oauth_clients(
    request: Request,
    caller: Caller,
    tenant: Annotated[str | None, Query(description="Only this tenant's clients.")] = None,
    sort: ClientSort = "client_id",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """The consumers that are OAuth 2.0 clients (never their secrets). Sort by `client_id` or
    `consumer`."""
    items = [
        c for c in _oauth_clients(_config(request), caller) if tenant is None or c.tenant == tenant
    ]
    keys: dict[str, Callable[[OAuthClientView], Any]] = {
        "client_id": lambda c: c.client_id,
        "consumer": lambda c: c.consumer,
    }
    return _page(request, items, keys, lambda c: c.client_id, sort, cursor, limit, OAuthClientPage)


@router.get(
    "/oauth-clients/{client_id}",
    response_model=OAuthClientView,
    summary="Get an OAuth client",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_oauth_client(
    request: Request, caller: Caller, client_id: str, if_none_match: IfNoneMatch = None
) -> Response:
    found = next(
        (c for c in _oauth_clients(_config(request), caller) if c.client_id == client_id), None
    )
    if found is None:
        raise not_found("OAuth client", client_id)
    return entity_response(found, if_none_match)
