"""Edits of the served entities: services, routes (with their policies), tenants and consumers,
created or replaced (``PUT``), and deleted, when ``entities.source`` is ``store`` (docs/sync.md).

A body is the entity as ``portico.yaml`` writes it (docs/configuration.md): durations such as
``10s``, secrets as ``${VAR}`` references. Each write is checked with the rest of the state and
the file's other sections exactly as ``portico check`` checks a file (errors point into the
body), becomes one new state revision and one audit entry, and is answered once every gateway
process polls it (within a second). ``If-Match`` with the entity's ``ETag`` makes the write
conditional (412 on a lost update). An entity locked to the file (``locked: true``) is refused
(409 ``entity-locked``); with ``entities.source: file`` every edit is (409 ``entities-from-file``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from portico.admin.authentication import Principal, context_of
from portico.admin.endpoints.common import Caller, IfMatch, entity_response, not_found
from portico.admin.endpoints.config import (
    ConsumerView,
    RouteView,
    ServiceView,
    TenantView,
    consumer_view,
    route_view,
    service_view,
    tenant_view,
)
from portico.admin.pagination import invalid
from portico.admin.problems import ENTITY_CONFLICT, AdminProblem
from portico.admin.roles import Role
from portico.admin.state import (
    Edit,
    Edited,
    edit,
    refuse_in_file_mode,
    written_consumer,
    written_route,
    written_service,
    written_tenant,
)
from portico.config.document import join_path
from portico.config.entities import EntityDocument
from portico.config.model import NAME_PATTERN, PorticoConfig

__all__ = ["EntityName", "apply_edit", "consumer_edit", "may_edit_consumer", "router"]

router = APIRouter()

EntityName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=200)]
_BODY_DESCRIPTION = (
    "The {kind} as `portico.yaml` writes it (docs/configuration.md): durations such as `10s`, "
    "secrets as `${{VAR}}` references (a secret's value is refused: the store would hold it). "
    "`locked` is the file's to set."
)


def _body(kind: str, example: dict[str, Any]) -> Any:
    return Body(
        description=_BODY_DESCRIPTION.format(kind=kind),
        openapi_examples={kind: {"summary": f"A {kind}", "value": example}},
    )


ServiceBody = Annotated[
    dict[str, Any],
    _body("service", {"targets": ["http://127.0.0.1:9101"], "timeouts": {"read": "10s"}}),
]
RouteBody = Annotated[
    dict[str, Any],
    _body(
        "route",
        {
            "match": {"path": "/orders/{rest:path}", "methods": ["GET"]},
            "service": "orders",
            "policies": [{"type": "auth", "methods": ["api_key"]}],
        },
    ),
]
TenantBody = Annotated[dict[str, Any], _body("tenant", {"metadata": {"team": "partners"}})]
ConsumerBody = Annotated[
    dict[str, Any], _body("consumer", {"scopes": ["orders:read"], "metadata": {"plan": "gold"}})
]


async def apply_edit(
    request: Request, caller: Principal, change: Edit, if_match: str | None
) -> Edited:
    """Make ``change`` (in a thread) and answer once the gateway processes serve it."""
    context = context_of(request)
    refuse_in_file_mode(context)
    edited = await run_in_threadpool(edit, context, caller.author, change, if_match)
    # Two polls of the gateways: the answer comes when every process serves the change.
    await asyncio.sleep(context.settle)
    return edited


def _answer(request: Request, edited: Edited, *, deleted: bool = False) -> Response:
    if deleted:
        return Response(status_code=204, headers={"cache-control": "no-store"})
    assert edited.after is not None
    created = edited.before is None
    headers = {"location": str(request.url.path)} if created else {}
    return entity_response(
        edited.after,
        status=201 if created else 200,
        tag=edited.tag,
        **{"x-portico-state-revision": str(edited.revision.id), **headers},
    )


def _written(body: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The body as stored: ``locked`` is refused (only ``portico apply`` marks an entity)."""
    if "locked" in body:
        raise invalid(
            "/locked",
            "only portico.yaml marks an entity locked (portico apply); the admin API cannot",
        )
    return {k: v for k, v in body.items() if k not in drop}


def _at(prefix: str) -> Callable[[EntityDocument], str]:
    return lambda _document: prefix


# -- services ------------------------------------------------------------------------------------


def _service_edit(name: str, replacement: dict[str, Any] | None) -> Edit:
    def read(document: EntityDocument) -> Any:
        return written_service(document, name)

    def change(document: EntityDocument) -> None:
        services = document.setdefault("services", {})
        if replacement is None:
            if name not in services:
                raise not_found("service", name)
            del services[name]
        else:
            services[name] = replacement

    def view(config: PorticoConfig) -> BaseModel | None:
        spec = config.services.get(name)
        return None if spec is None else service_view(config, name, spec)

    return Edit(
        "service",
        name,
        None,
        _at(join_path("services", name, sequence=False)),
        read,
        change,
        view,
        deleting=replacement is None,
    )


@router.put(
    "/services/{name}",
    response_model=ServiceView,
    summary="Create or replace a service",
    responses={201: {"description": "Created"}, 200: {"description": "Replaced"}},
)
async def put_service(
    request: Request, caller: Caller, name: EntityName, body: ServiceBody, if_match: IfMatch = None
) -> Response:
    """The service `name`, as `portico.yaml` writes it under `services`. Needs the operator
    role and a token of every tenant."""
    caller.require(Role.OPERATOR)
    caller.require_every_tenant()
    edited = await apply_edit(request, caller, _service_edit(name, _written(body)), if_match)
    return _answer(request, edited)


@router.delete("/services/{name}", status_code=204, summary="Delete a service")
async def delete_service(
    request: Request, caller: Caller, name: EntityName, if_match: IfMatch = None
) -> Response:
    """Refused (409 `entity-conflict`) while a route names it."""
    caller.require(Role.OPERATOR)
    caller.require_every_tenant()
    edited = await apply_edit(request, caller, _service_edit(name, None), if_match)
    return _answer(request, edited, deleted=True)


# -- routes --------------------------------------------------------------------------------------


def _route_edit(name: str, replacement: dict[str, Any] | None) -> Edit:
    def index(document: EntityDocument) -> int | None:
        routes = document.get("routes") or []
        for i, route in enumerate(routes):
            if isinstance(route, dict) and route.get("name") == name:
                return i
        return None

    def read(document: EntityDocument) -> Any:
        return written_route(document, name)

    def change(document: EntityDocument) -> None:
        routes = document.setdefault("routes", [])
        i = index(document)
        if replacement is None:
            if i is None:
                raise not_found("route", name)
            del routes[i]
        elif i is None:
            routes.append(replacement)
        else:
            routes[i] = replacement

    def view(config: PorticoConfig) -> BaseModel | None:
        found = next((r for r in config.routes if r.name == name), None)
        return None if found is None else route_view(config, found)

    def prefix(document: EntityDocument) -> str:
        i = index(document)
        return "" if i is None else f"routes[{i}]"

    return Edit("route", name, None, prefix, read, change, view, deleting=replacement is None)


@router.put(
    "/routes/{name}",
    response_model=RouteView,
    summary="Create or replace a route",
    responses={201: {"description": "Created"}, 200: {"description": "Replaced"}},
)
async def put_route(
    request: Request, caller: Caller, name: EntityName, body: RouteBody, if_match: IfMatch = None
) -> Response:
    """The route `name` with its policies, as `portico.yaml` writes an item of `routes` (its
    `name` is the path's; routes are matched by specificity, not by their order). Needs the
    operator role and a token of every tenant."""
    caller.require(Role.OPERATOR)
    caller.require_every_tenant()
    written = _written(body)
    if written.get("name", name) != name:
        raise invalid("/name", f"the route's name is the path's: {name}")
    written = {"name": name, **{k: v for k, v in written.items() if k != "name"}}
    edited = await apply_edit(request, caller, _route_edit(name, written), if_match)
    return _answer(request, edited)


@router.delete("/routes/{name}", status_code=204, summary="Delete a route")
async def delete_route(
    request: Request, caller: Caller, name: EntityName, if_match: IfMatch = None
) -> Response:
    caller.require(Role.OPERATOR)
    caller.require_every_tenant()
    edited = await apply_edit(request, caller, _route_edit(name, None), if_match)
    return _answer(request, edited, deleted=True)


# -- tenants -------------------------------------------------------------------------------------


def _tenant_edit(tenant: str, replacement: dict[str, Any] | None) -> Edit:
    def read(document: EntityDocument) -> Any:
        return written_tenant(document, tenant)

    def guard(document: EntityDocument) -> None:
        found = (document.get("tenants") or {}).get(tenant)
        consumers = found.get("consumers") if isinstance(found, dict) else None
        if replacement is None and consumers:
            raise AdminProblem(
                ENTITY_CONFLICT,
                f"tenant {tenant} has consumers ({', '.join(sorted(consumers))}): delete them "
                "first",
            )

    def change(document: EntityDocument) -> None:
        tenants = document.setdefault("tenants", {})
        if replacement is None:
            if tenant not in tenants:
                raise not_found("tenant", tenant)
            del tenants[tenant]
            return
        consumers = (tenants.get(tenant) or {}).get("consumers")
        tenants[tenant] = {**replacement, **({"consumers": consumers} if consumers else {})}

    def view(config: PorticoConfig) -> BaseModel | None:
        spec = config.tenants.get(tenant)
        if spec is None:
            return None
        return tenant_view(tenant, spec)

    return Edit(
        "tenant",
        tenant,
        tenant,
        _at(join_path("tenants", tenant, sequence=False)),
        read,
        change,
        view,
        guard=guard,
        deleting=replacement is None,
    )


def _may_edit_tenant(caller: Principal, tenant: str) -> None:
    """A tenant-scoped token edits its own tenant (never makes another: 404, as for any entity
    of another tenant)."""
    caller.require(Role.OPERATOR)
    if not caller.sees(tenant):
        raise not_found("tenant", tenant)


@router.put(
    "/tenants/{tenant}",
    response_model=TenantView,
    summary="Create or replace a tenant",
    responses={201: {"description": "Created"}, 200: {"description": "Replaced"}},
)
async def put_tenant(
    request: Request,
    caller: Caller,
    tenant: EntityName,
    body: TenantBody,
    if_match: IfMatch = None,
) -> Response:
    """The tenant's own settings (`metadata`); its consumers are kept, and changed on their
    own paths. Needs the operator role."""
    _may_edit_tenant(caller, tenant)
    if "consumers" in body:
        raise invalid("/consumers", "consumers are changed on /tenants/{tenant}/consumers/{name}")
    edited = await apply_edit(request, caller, _tenant_edit(tenant, _written(body)), if_match)
    return _answer(request, edited)


@router.delete("/tenants/{tenant}", status_code=204, summary="Delete a tenant")
async def delete_tenant(
    request: Request, caller: Caller, tenant: EntityName, if_match: IfMatch = None
) -> Response:
    """Refused (409 `entity-conflict`) while it has consumers."""
    _may_edit_tenant(caller, tenant)
    edited = await apply_edit(request, caller, _tenant_edit(tenant, None), if_match)
    return _answer(request, edited, deleted=True)


# -- consumers -----------------------------------------------------------------------------------


Replacement = dict[str, Any] | Callable[[EntityDocument], dict[str, Any]] | None
"""An entity's new value, or how to make it from the (latest) document; ``None``: delete it."""


def consumer_edit(tenant: str, name: str, replacement: Replacement) -> Edit:
    """The edit of consumer ``tenant/name``: replaced (or made) by ``replacement``."""

    def read(document: EntityDocument) -> Any:
        return written_consumer(document, tenant, name)

    def change(document: EntityDocument) -> None:
        tenants = document.setdefault("tenants", {})
        found = tenants.get(tenant)
        if not isinstance(found, dict):
            raise not_found("tenant", tenant)
        inside = found.setdefault("consumers", {})
        if inside is None:
            inside = found["consumers"] = {}
        if replacement is None:
            if name not in inside:
                raise not_found("consumer", f"{tenant}/{name}")
            del inside[name]
        else:
            inside[name] = replacement(document) if callable(replacement) else replacement

    def view(config: PorticoConfig) -> BaseModel | None:
        spec = config.tenants.get(tenant)
        consumer = None if spec is None else spec.consumers.get(name)
        return None if consumer is None else consumer_view(tenant, name, consumer)

    inside = join_path(join_path("tenants", tenant, sequence=False), "consumers", sequence=False)
    return Edit(
        "consumer",
        f"{tenant}/{name}",
        tenant,
        _at(join_path(inside, name, sequence=False)),
        read,
        change,
        view,
        deleting=replacement is None,
    )


def may_edit_consumer(caller: Principal, tenant: str, name: str) -> None:
    caller.require(Role.OPERATOR)
    if not caller.sees(tenant):
        raise not_found("consumer", f"{tenant}/{name}")


@router.put(
    "/tenants/{tenant}/consumers/{name}",
    response_model=ConsumerView,
    summary="Create or replace a consumer",
    responses={201: {"description": "Created"}, 200: {"description": "Replaced"}},
)
async def put_consumer(
    request: Request,
    caller: Caller,
    tenant: EntityName,
    name: EntityName,
    body: ConsumerBody,
    if_match: IfMatch = None,
) -> Response:
    """A consumer of an existing tenant, as `portico.yaml` writes it under
    `tenants.<tenant>.consumers` (scopes, metadata, keys declared by hash, an OAuth client,
    signature keys, certificates, IP rules). Needs the operator role; a tenant-scoped token
    edits its own tenant's consumers only."""
    may_edit_consumer(caller, tenant, name)
    edited = await apply_edit(
        request, caller, consumer_edit(tenant, name, _written(body)), if_match
    )
    return _answer(request, edited)


@router.delete("/tenants/{tenant}/consumers/{name}", status_code=204, summary="Delete a consumer")
async def delete_consumer(
    request: Request,
    caller: Caller,
    tenant: EntityName,
    name: EntityName,
    if_match: IfMatch = None,
) -> Response:
    """The consumer stops being known at once in every gateway process: its credentials of
    the config with it (keys made with `portico keys` are refused as they name no consumer)."""
    may_edit_consumer(caller, tenant, name)
    edited = await apply_edit(request, caller, consumer_edit(tenant, name, None), if_match)
    return _answer(request, edited, deleted=True)
