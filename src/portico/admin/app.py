"""The admin API as an ASGI application (FastAPI), under ``/admin/v1``.

- ``GET /admin/v1/openapi.json``: its OpenAPI 3.1 document, generated from the endpoints, with
  the problem responses and the bearer scheme every operation has (:func:`_document`);
- ``GET /admin/v1/docs``: interactive docs (Swagger UI) whose script, style sheet and icon are
  served from ``/admin/v1/docs/assets/`` by Portico itself (the files ``fastapi-offline``
  ships), never from a CDN: the machine may be offline;
- every other answer of the framework (an unknown path, a method not allowed, a request that
  does not validate, a crash) is a problem document (:mod:`portico.admin.problems`).

Neither the document nor the docs need a token: they describe the API, they hold no data.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Route

from portico.admin.body_limit import BodyLimit
from portico.admin.context import AdminContext
from portico.admin.endpoints import (
    api_keys,
    audit,
    cache,
    catalog,
    config,
    edits,
    events,
    oauth_clients,
    signing_keys,
    usage,
    webhook_deliveries,
    webhooks,
    whoami,
)
from portico.admin.problem_schema import problem_schema
from portico.admin.problems import AdminProblem, problem_response
from portico.admin.request_ids import RequestIds, request_id_of
from portico.gateway import problems
from portico.gateway.problems import PROBLEM_CONTENT_TYPE, ProblemType

__all__ = ["PREFIX", "build_app"]

from portico.events.problems import STORE_UNAVAILABLE
from portico.store.database import DatabaseUnavailable, StoreBusy

log = logging.getLogger("portico.admin")

PREFIX = "/admin/v1"
DOCUMENT = f"{PREFIX}/openapi.json"
DOCS = f"{PREFIX}/docs"
ASSETS = f"{DOCS}/assets"
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
_BY_STATUS = {
    400: problems.BAD_REQUEST,
    404: problems.ROUTE_NOT_FOUND,
    405: problems.METHOD_NOT_ALLOWED,
    413: problems.REQUEST_TOO_LARGE,
}
DESCRIPTION = """\
Portico's admin API: the running config's services, routes, tenants, consumers and OAuth
clients (read-only: they change in `portico.yaml`), the API catalog (services with their
owners, lifecycles and operations, and the merged OpenAPI document of an audience), API keys
(created, rotated, revoked), the OAuth server's signing keys, rate-limit usage, cache purges,
event types and publishing, webhook endpoints and their deliveries (dead letters, redelivery),
and the audit log.

Every request carries an admin token, `Authorization: Bearer padm_...` (`portico admin tokens
create`). Errors are `application/problem+json` (RFC 9457). Lists are paged with an opaque
`cursor`; single entities carry an `ETag`, and changes accept `If-Match` (412 on a lost update).
See docs/admin-api.md."""


def build_app(context: AdminContext) -> FastAPI:
    app = FastAPI(
        title="Portico admin API",
        version="1",
        description=DESCRIPTION,
        openapi_url=DOCUMENT,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.context = context
    tagged = (
        (config.router, "config"),
        (edits.router, "config"),
        (oauth_clients.router, "config"),
        (catalog.router, "catalog"),
        (api_keys.router, "api-keys"),
        (signing_keys.router, "signing-keys"),
        (usage.router, "usage"),
        (cache.router, "cache"),
        (events.router, "events"),
        (webhooks.router, "webhooks"),
        (webhook_deliveries.router, "webhooks"),
        (audit.router, "audit-log"),
        (whoami.router, "tokens"),
    )
    for router, tag in tagged:
        app.include_router(router, prefix=PREFIX, tags=[tag])
    _add_docs(app)
    _add_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.add_middleware(RequestIds)

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
    return app


# -- errors --------------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AdminProblem)
        return problem_response(
            exc.kind, request_id_of(request), exc.detail, headers=exc.headers, **exc.extensions
        )

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [_error(error) for error in exc.errors()]
        return problem_response(problems.VALIDATION_FAILED, request_id_of(request), errors=errors)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = _BY_STATUS.get(exc.status_code) or ProblemType(
            "bad-request" if exc.status_code < 500 else "internal-error",
            exc.status_code,
            problems.BAD_REQUEST.title if exc.status_code < 500 else problems.INTERNAL_ERROR.title,
        )
        headers = {}
        if exc.status_code == 405:
            headers["allow"] = ", ".join(_allowed(request))
        return problem_response(kind, request_id_of(request), headers=headers)

    async def on_crash(request: Request, exc: Exception) -> Response:
        request_id = request_id_of(request)
        if isinstance(exc, StoreBusy | DatabaseUnavailable):
            log.warning("admin API (request %s): %s", request_id, exc)
            return problem_response(STORE_UNAVAILABLE, request_id, headers={"retry-after": "1"})
        log.error("admin API failed (request %s)", request_id, exc_info=exc)
        return problem_response(problems.INTERNAL_ERROR, request_id)

    app.add_exception_handler(AdminProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def _allowed(request: Request) -> list[str]:
    """Every method some route takes at this path: Starlette's 405 names only the first route
    that matched the path, and one path may have a route per method."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return sorted(methods)


def _error(error: Any) -> dict[str, str]:
    """A pydantic error as ``{pointer, message}``: a JSON Pointer into the body, or
    ``/query/<name>``, ``/header/<name>``, ``/path/<name>`` (the gateway's convention)."""
    where, *rest = [str(part) for part in error.get("loc", ())] or ["body"]
    escaped = [part.replace("~", "~0").replace("/", "~1") for part in rest]
    if where == "header":
        escaped = [part.lower() for part in escaped]
    inside = "".join("/" + part for part in escaped)
    pointer = inside if where == "body" else f"/{where}{inside}"
    return {"pointer": pointer, "message": str(error.get("msg", "invalid"))}


# -- the docs ------------------------------------------------------------------------------------


def _add_docs(app: FastAPI) -> None:
    assets: dict[str, bytes] = {}

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=DOCUMENT,
            title="Portico admin API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": False, "validatorUrl": None},
        )

    @app.get(f"{ASSETS}/{{name}}", include_in_schema=False)
    async def asset(name: str) -> Response:
        content_type = _ASSET_TYPES.get(name)
        if content_type is None:
            raise HTTPException(404)
        if name not in assets:
            folder = resources.files("fastapi_offline").joinpath("static")
            assets[name] = folder.joinpath(name).read_bytes()
        return Response(
            assets[name], media_type=content_type, headers={"cache-control": "max-age=86400"}
        )


# -- the document --------------------------------------------------------------------------------

_PROBLEM_SCHEMA = problem_schema("An RFC 9457 problem document (docs/errors.md).")
_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ALWAYS = {
    "400": "Malformed request, credentials in the query string, or a validation error "
    "(`validation-failed`, with `errors`)",
    "401": "No admin token, or one that is unknown, expired or revoked",
    "403": "The token's role or tenant does not allow this",
    "413": "The request body is too large",
    "500": "A bug in Portico (the log has it under the request id)",
}


def _document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with what it cannot know: the problem responses (instead of its
    422 with ``{"detail": ...}``, which this API never answers) and the bearer scheme."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        openapi_version="3.1.0",
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = _PROBLEM_SCHEMA
    components["securitySchemes"] = {
        "adminToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "An admin token, `padm_...` (`portico admin tokens create`).",
        }
    }
    document["security"] = [{"adminToken": []}]
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if responses.get("422", {}).get("description") == "Validation Error":
                responses.pop("422")  # FastAPI's own, which this API never answers
            wanted = dict(_ALWAYS)
            if "{" in path:
                wanted["404"] = "No such entity (or one the token's tenant does not see)"
            if method in ("post", "put", "patch", "delete"):
                wanted["409"] = (
                    "The entity's state or origin does not allow this change "
                    "(`entity-conflict`, `entity-locked`, `entities-from-file`)"
                )
            names = {p.get("name") for p in operation.get("parameters", [])}
            if "if-match" in names:
                wanted["412"] = "The entity changed since the ETag given in If-Match"
            for status, description in wanted.items():
                responses.setdefault(status, {"description": description, "content": _PROBLEM})
    _link(document)
    return document


def _link(document: dict[str, Any]) -> None:
    """OpenAPI links from a key's creation and rotation to what can be done with the key next,
    and from an entity's creation or replacement to reading, replacing and deleting it: what a
    client (and schemathesis's stateful tests) follows."""
    paths = document.get("paths", {})
    for path in (
        f"{PREFIX}/services/{{name}}",
        f"{PREFIX}/routes/{{name}}",
        f"{PREFIX}/tenants/{{tenant}}",
        f"{PREFIX}/tenants/{{tenant}}/consumers/{{name}}",
    ):
        operations = paths.get(path, {})
        parameters = {
            p["name"]: f"$request.path.{p['name']}"
            for p in operations.get("put", {}).get("parameters", [])
            if p.get("in") == "path"
        }
        follow = {
            verb.capitalize(): operations[method]["operationId"]
            for verb, method in (("get", "get"), ("replace", "put"), ("delete", "delete"))
            if method in operations
        }
        for status in ("200", "201"):
            answer = operations.get("put", {}).get("responses", {}).get(status)
            if answer is not None:
                answer["links"] = {
                    name: {"operationId": operation, "parameters": parameters}
                    for name, operation in follow.items()
                }
    key = f"{PREFIX}/api-keys/{{key_id}}"
    follow = {
        "GetApiKey": paths.get(key, {}).get("get", {}).get("operationId"),
        "RotateApiKey": paths.get(f"{key}/rotate", {}).get("post", {}).get("operationId"),
        "RevokeApiKey": paths.get(f"{key}/revoke", {}).get("post", {}).get("operationId"),
    }
    _link_created(
        paths,
        f"{PREFIX}/webhook-endpoints",
        "endpoint_id",
        {
            "GetWebhookEndpoint": ("", "get"),
            "ChangeWebhookEndpoint": ("", "patch"),
            "DisableWebhookEndpoint": ("/disable", "post"),
            "EnableWebhookEndpoint": ("/enable", "post"),
            "RotateWebhookSecret": ("/rotate-secret", "post"),
            "DeleteWebhookEndpoint": ("", "delete"),
        },
    )
    for path, where in ((f"{PREFIX}/api-keys", "/id"), (f"{key}/rotate", "/new/id")):
        created = paths.get(path, {}).get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        created["links"] = {
            name: {"operationId": operation, "parameters": {"key_id": f"$response.body#{where}"}}
            for name, operation in follow.items()
            if operation is not None
        }


def _link_created(
    paths: dict[str, Any], collection: str, parameter: str, follow: dict[str, tuple[str, str]]
) -> None:
    """Links from the ``201`` of ``POST collection`` to the operations on what it created
    (``collection/{parameter}`` and below), with the created entity's ``id``."""
    created = paths.get(collection, {}).get("post", {}).get("responses", {}).get("201")
    if created is None:
        return
    links = {}
    for name, (suffix, method) in follow.items():
        operation = paths.get(f"{collection}/{{{parameter}}}{suffix}", {}).get(method)
        if operation is not None:
            links[name] = {
                "operationId": operation["operationId"],
                "parameters": {parameter: "$response.body#/id"},
            }
    created["links"] = links
