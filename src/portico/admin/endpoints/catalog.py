"""The API catalog, read-only (docs/catalog.md): each service with its owner, description,
tags, API and version (and the other versions of its API), lifecycle and audience, its routes
and the operations they expose with the scopes each needs; the merged OpenAPI document of
an audience; and the event types a webhook subscriber receives.

From the running config, as the last reload applied it (the documents from their files, read
again when they change). Every tenant's: a tenant-scoped token gets 403 ``tenant-scoped``,
as for the services and routes themselves; the internal catalog is not a tenant's to read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portico.admin.authentication import context_of
from portico.admin.catalog.events import event_types
from portico.admin.catalog.openapi import merged_document
from portico.admin.catalog.operations import ExposedOperation, service_operations
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
from portico.admin.endpoints.events import EventTypePage, EventTypeView
from portico.admin.pagination import Page, etag_of, next_link, not_modified, paginate, parse_sort
from portico.admin.state import current_config
from portico.config.catalog import Audience, LifecycleState
from portico.config.model import PorticoConfig

__all__ = ["router"]

router = APIRouter()


# -- representations -----------------------------------------------------------------------------


class ScopesView(BaseModel):
    all_of: list[str]
    """Every one of these is needed."""
    any_of: list[str]
    """At least one of these is needed."""


class AuthView(BaseModel):
    methods: list[str]
    """Any one of them lets a request in: ``api_key``, ``oauth``, ``jwt:<provider>``,
    ``signature``, ``mtls``."""
    scopes: ScopesView
    tenants: list[str]
    """When not empty, only consumers of these tenants."""


class OperationView(BaseModel):
    method: str
    path: str
    """The gateway's path, as OpenAPI writes it."""
    operation_id: str | None
    summary: str | None
    documented: bool
    """From the service's OpenAPI document (else made up from the route)."""
    deprecated: bool
    auth: AuthView | None
    """``null``: the route takes requests without credentials."""


class CatalogRouteView(BaseModel):
    name: str
    path: str
    methods: list[str]
    """Empty: every method."""
    operations: list[OperationView]


class VersionView(BaseModel):
    service: str
    version: str | None
    lifecycle: LifecycleState


class LifecycleView(BaseModel):
    state: LifecycleState
    since: str | None
    sunset: str | None
    link: str | None
    sunset_link: str | None


class CatalogEntry(BaseModel):
    name: str
    """The service."""
    api: str
    """The API it is a version of (its own name unless the config says ``api``)."""
    version: str | None
    versions: list[VersionView]
    """Every service of the same API, this one included, by version."""
    owner: str | None
    description: str | None
    tags: list[str]
    lifecycle: LifecycleView
    audience: Audience
    served: bool
    """``false`` while in design: its routes answer 404."""
    openapi: bool
    """Whether the service names an OpenAPI document."""
    document_problem: str | None
    """Why the document could not be read (its operations are then made up from the routes)."""
    routes: list[CatalogRouteView]


class CatalogPage(Page[CatalogEntry]):
    pass


def _operation_view(exposed: ExposedOperation) -> OperationView:
    auth = exposed.auth
    return OperationView(
        method=exposed.method.upper(),
        path=exposed.path,
        operation_id=exposed.operation_id,
        summary=exposed.summary,
        documented=exposed.documented,
        deprecated=exposed.deprecated,
        auth=None
        if auth is None
        else AuthView(
            methods=list(auth.methods),
            scopes=ScopesView(all_of=list(auth.all_of), any_of=list(auth.any_of)),
            tenants=list(auth.tenants),
        ),
    )


def catalog_entry(config: PorticoConfig, name: str) -> CatalogEntry:
    found = service_operations(config, name)
    service = found.service
    api = service.api or name
    siblings = [
        VersionView(service=other, version=spec.version, lifecycle=spec.lifecycle.state)
        for other, spec in config.services.items()
        if (spec.api or other) == api
    ]
    siblings.sort(key=lambda v: (v.version is None, v.version or "", v.service))
    routes = []
    for route in config.routes:
        if route.service != name:
            continue
        routes.append(
            CatalogRouteView(
                name=route.name,
                path=route.match.path,
                methods=list(route.match.methods),
                operations=[_operation_view(e) for e in found.operations if e.route == route.name],
            )
        )
    lifecycle = service.lifecycle
    return CatalogEntry(
        name=name,
        api=api,
        version=service.version,
        versions=siblings,
        owner=service.owner,
        description=service.description,
        tags=list(service.tags),
        lifecycle=LifecycleView(
            state=lifecycle.state,
            since=None if lifecycle.since is None else lifecycle.since.isoformat(),
            sunset=None if lifecycle.sunset is None else lifecycle.sunset.isoformat(),
            link=lifecycle.link,
            sunset_link=lifecycle.sunset_link,
        ),
        audience=service.audience,
        served=lifecycle.state != "design",
        openapi=service.openapi is not None,
        document_problem=found.problem,
        routes=routes,
    )


def _config(request: Request) -> PorticoConfig:
    # With entities.source: store, the store's latest revision (what the gateways serve).
    return current_config(context_of(request))


_SORT = Query(description="A documented field; `-field` sorts descending.")
CatalogSort = Annotated[Literal["name", "-name", "api", "-api", "owner", "-owner"], _SORT]


def _document_response(document: dict[str, Any], if_none_match: str | None) -> Response:
    """An OpenAPI document with its ``ETag``; 304 when ``If-None-Match`` names it."""
    etag = etag_of(document)
    headers = {"etag": etag, "cache-control": "no-store"}
    if not_modified(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return JSONResponse(document, headers=headers)


@router.get("/catalog", response_model=CatalogPage, summary="List the API catalog")
def list_catalog(
    request: Request,
    caller: Caller,
    tag: Annotated[str | None, Query(description="Only services with this tag.")] = None,
    owner: Annotated[str | None, Query(description="Only services of this owner.")] = None,
    lifecycle: Annotated[
        LifecycleState | None, Query(description="Only services in this state.")
    ] = None,
    audience: Annotated[
        Audience | None, Query(description="Only services of this audience (exactly).")
    ] = None,
    api: Annotated[str | None, Query(description="Only the versions of this API.")] = None,
    sort: CatalogSort = "name",
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
) -> Response:
    """Every service of the running config with its catalog metadata, routes and operations.
    Sort by `name`, `api` or `owner`. Every tenant's: a tenant-scoped token gets 403."""
    caller.require_every_tenant()
    config = _config(request)
    names = [
        name
        for name, spec in config.services.items()
        if (tag is None or tag in spec.tags)
        and (owner is None or spec.owner == owner)
        and (lifecycle is None or spec.lifecycle.state == lifecycle)
        and (audience is None or spec.audience == audience)
        and (api is None or (spec.api or name) == api)
    ]
    field, descending = parse_sort(sort, ["name", "api", "owner"])
    keys: dict[str, Callable[[str], Any]] = {
        "name": lambda n: n,
        "api": lambda n: config.services[n].api or n,
        "owner": lambda n: config.services[n].owner,
    }
    chosen, following = paginate(
        names,
        lambda n: (keys[field](n), n),
        sort=sort,
        descending=descending,
        cursor=cursor,
        limit=limit,
    )
    items = [catalog_entry(config, name) for name in chosen]
    url = next_link(request, following)
    return page_response(CatalogPage(items=items, next_cursor=following, next=url), request, url)


@router.get(
    "/catalog/openapi",
    response_model=dict[str, Any],
    summary="Get the merged OpenAPI document of an audience",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_catalog_document(
    request: Request,
    caller: Caller,
    audience: Annotated[
        Audience,
        Query(
            description="Who it is for: `public` sees less than `partner`, which sees less "
            "than `internal`."
        ),
    ] = "public",
    if_none_match: IfNoneMatch = None,
) -> Response:
    """One OpenAPI 3.1 document of every service the audience sees (design and retired
    services never), as the gateway exposes it: its paths, each operation's credentials and
    scopes, and the errors Portico answers. The same as `portico catalog export`."""
    caller.require_every_tenant()
    document = merged_document(_config(request), audience)
    return _document_response(document, if_none_match)


@router.get(
    "/catalog/event-types",
    response_model=EventTypePage,
    summary="List the event types of the catalog",
)
def list_catalog_event_types(request: Request, caller: Caller) -> Response:
    """The event types (name, description, version, owner, the JSON Schema of the `data`),
    by name: what a subscriber of the webhooks receives. The same as `GET /event-types` and
    `portico catalog event-types`."""
    caller.require_every_tenant()
    items = [EventTypeView.of(entry) for entry in event_types(_config(request))]
    return page_response(EventTypePage(items=items, next_cursor=None, next=None), request, None)


@router.get(
    "/catalog/{service}/openapi",
    response_model=dict[str, Any],
    summary="Get a service's OpenAPI document as the gateway exposes it",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_service_document(
    request: Request, caller: Caller, service: str, if_none_match: IfNoneMatch = None
) -> Response:
    """The service's operations alone, in the shape of the merged document (OpenAPI 3.1): the
    gateway's paths, each operation's credentials and scopes, the errors Portico answers;
    whatever its lifecycle and audience."""
    caller.require_every_tenant()
    config = _config(request)
    if service not in config.services:
        raise not_found("service", service)
    document = merged_document(config, "internal", title=f"{service} (Portico)", service=service)
    return _document_response(document, if_none_match)


@router.get(
    "/catalog/{service}",
    response_model=CatalogEntry,
    summary="Get a service's catalog entry",
    responses={304: {"description": "Not modified (`If-None-Match`)"}},
)
def get_catalog_entry(
    request: Request, caller: Caller, service: str, if_none_match: IfNoneMatch = None
) -> Response:
    caller.require_every_tenant()
    config = _config(request)
    if service not in config.services:
        raise not_found("service", service)
    return entity_response(catalog_entry(config, service), if_none_match)
