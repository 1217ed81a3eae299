"""Which operations a route exposes, at which path of the gateway.

A service's OpenAPI document describes the backend: its paths are the upstream's (after the
document's base path, its first ``servers`` URL's path, or the ``validation`` policy's
``base_path``). A route maps the gateway's paths onto them: as they are, less a
``strip_prefix`` put back in front, or through an ``upstream_path`` template. To find what a
route exposes, each operation's upstream path is made concrete, each of its parameters a
placeholder character that no literal path holds, and run backwards through the route's
mapping; where the route's template matches the result, the route exposes the operation at
that gateway path, with the placeholders turned back into the document's parameters. So
``/validated/{rest:path}`` (``strip_prefix: /validated``) exposes ``/orders`` and
``/orders/{id}`` of its document as ``/validated/orders`` and ``/validated/orders/{id}``, and
``/crm/customers/{id}`` with ``upstream_path: /customers/{id}`` exposes ``/customers/{cid}``
at ``/crm/customers/{id}``, the operation's parameter renamed.

A route that exposes no operation of a document (a service without one, or a route narrower
than the document's paths) exposes operations made up from the route itself: one per method
it takes, its parameters strings.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from portico.admin.catalog.documents import DocumentError, service_document
from portico.admin.catalog.security import RouteAuth, route_auth
from portico.config.model import PolicySpec, PorticoConfig, Route, Service
from portico.core.paths import PathTemplate
from portico.policies.deprecation.settings import DeprecationSettings
from portico.policies.registry import effective_policies
from portico.policies.validation.compiler import base_path_of
from portico.policies.validation.document import OpenAPIDocument
from portico.policies.validation.schemas import resolve_pointer

__all__ = [
    "METHODS",
    "Deprecation",
    "ExposedOperation",
    "ServiceOperations",
    "service_operations",
]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
"""The methods of an OpenAPI path item."""
ANY_METHOD = ("get", "post", "put", "patch", "delete")
"""What a route that names no method is described with."""
_DOC_PARAM = re.compile(r"\{([^{}/]+)\}")
_ROUTE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
_MARK = re.compile("\ue000([0-9]+)\ue001")


def _mark(index: int) -> str:
    # Private-use characters: never in a literal path, and not "/", so one stands for a
    # segment (or part of one) wherever the route's template has a parameter or a literal.
    return f"\ue000{index}\ue001"


@dataclass(frozen=True, slots=True)
class Deprecation:
    """How a route announces its deprecation (its effective ``deprecation`` entry)."""

    since: str | None
    sunset: str | None
    link: str | None
    retired: bool


@dataclass(slots=True)
class ExposedOperation:
    """One operation as the gateway exposes it: a method at a path of the gateway, on a
    route, with what the route's policies add."""

    route: str
    service: str
    method: str
    """Lower case, as OpenAPI writes it."""
    path: str
    """The gateway's path, in OpenAPI's template syntax (``/v2/orders/{id}``)."""
    operation: dict[str, Any]
    """The document's Operation Object (a copy, path parameters renamed and merged with the
    path item's), or one made up from the route."""
    documented: bool
    auth: RouteAuth | None
    validated: bool
    rate_limited: bool
    deprecation: Deprecation | None
    conditions: dict[str, Any] = field(default_factory=dict)
    """What else the route matches on: ``hosts``, ``headers``."""

    @property
    def operation_id(self) -> str | None:
        found = self.operation.get("operationId")
        return found if isinstance(found, str) else None

    @property
    def summary(self) -> str | None:
        found = self.operation.get("summary")
        return found if isinstance(found, str) else None

    @property
    def deprecated(self) -> bool:
        return self.deprecation is not None or self.operation.get("deprecated") is True


@dataclass(frozen=True, slots=True)
class ServiceOperations:
    """What a service's routes expose, and its document (``None`` without one, or when it
    cannot be read: ``problem`` says why)."""

    name: str
    service: Service
    operations: list[ExposedOperation]
    document: OpenAPIDocument | None
    problem: str | None


def service_operations(config: PorticoConfig, name: str) -> ServiceOperations:
    """Every operation the routes of service ``name`` expose, in the order of the routes."""
    service = config.services[name]
    document: OpenAPIDocument | None = None
    problem: str | None = None
    if service.openapi is not None:
        try:
            document = service_document(service.openapi)
        except DocumentError as exc:
            problem = exc.problems[0] if exc.problems else str(exc)
    found: list[ExposedOperation] = []
    for route in config.routes:
        if route.service == name:
            found.extend(route_operations(config, route, document))
    return ServiceOperations(name, service, found, document, problem)


def route_operations(
    config: PorticoConfig, route: Route, document: OpenAPIDocument | None
) -> list[ExposedOperation]:
    """The operations ``route`` exposes: those of ``document`` it reaches, else made up."""
    specs = effective_policies(config, route)
    traits = _Traits(
        auth=route_auth(specs),
        validated=any(s.type == "validation" for s in specs),
        rate_limited=any(s.type == "rate-limit" for s in specs),
        deprecation=_deprecation(specs),
        conditions=_conditions(route),
    )
    found: list[ExposedOperation] = []
    if document is not None:
        base = _base_path(document, specs)
        for template, item in (document.data.get("paths") or {}).items():
            if not isinstance(item, dict) or not isinstance(template, str):
                continue
            for method in METHODS:
                operation = item.get(method)
                if not isinstance(operation, dict) or not _takes(route, method):
                    continue
                exposed = _expose(route, base + template)
                if exposed is None:
                    continue
                path, renamed, extra = exposed
                found.append(
                    traits.operation(
                        route,
                        method,
                        path,
                        _operation(document, item, operation, renamed, extra),
                        documented=True,
                    )
                )
    if not found:
        found = _made_up(route, traits)
    return found


@dataclass(frozen=True, slots=True)
class _Traits:
    auth: RouteAuth | None
    validated: bool
    rate_limited: bool
    deprecation: Deprecation | None
    conditions: dict[str, Any]

    def operation(
        self, route: Route, method: str, path: str, operation: dict[str, Any], *, documented: bool
    ) -> ExposedOperation:
        return ExposedOperation(
            route=route.name,
            service=route.service,
            method=method,
            path=path,
            operation=operation,
            documented=documented,
            auth=self.auth,
            validated=self.validated,
            rate_limited=self.rate_limited,
            deprecation=self.deprecation,
            conditions=self.conditions,
        )


def _deprecation(specs: tuple[PolicySpec, ...]) -> Deprecation | None:
    spec = next((s for s in specs if s.type == "deprecation"), None)
    if spec is None:
        return None
    settings = DeprecationSettings.model_validate(dict(spec.model_extra or {}))
    return Deprecation(
        since=None if settings.since is None else settings.since.isoformat(),
        sunset=None if settings.sunset is None else settings.sunset.isoformat(),
        link=settings.link,
        retired=settings.retired,
    )


def _conditions(route: Route) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if route.match.hosts:
        conditions["hosts"] = list(route.match.hosts)
    if route.match.headers:
        conditions["headers"] = dict(route.match.headers)
    return conditions


def _base_path(document: OpenAPIDocument, specs: tuple[PolicySpec, ...]) -> str:
    """Where the document's paths start upstream: as the ``validation`` policy reads it."""
    for spec in specs:
        if spec.type == "validation":
            given = (spec.model_extra or {}).get("base_path")
            if isinstance(given, str):
                return given.rstrip("/")
    return base_path_of(document.data)


def _takes(route: Route, method: str) -> bool:
    methods = route.match.methods
    return not methods or method.upper() in methods


def _expose(route: Route, upstream: str) -> tuple[str, dict[str, str], list[str]] | None:
    """The gateway path at which ``route`` reaches the upstream path template ``upstream``;
    the document's path parameters renamed (``{old: new}``) where the gateway's template names
    them otherwise; and the gateway's parameters the document does not know (which the
    upstream never sees)."""
    names: list[str] = []

    def mark(m: re.Match[str]) -> str:
        names.append(m.group(1))
        return _mark(len(names) - 1)

    concrete = _DOC_PARAM.sub(mark, upstream) or "/"
    gateway = PathTemplate.parse(route.match.path)
    if route.upstream_path is not None:
        params = PathTemplate.parse(route.upstream_path).match(concrete)
        if params is None:
            return None
        path = _fill(route.match.path, params)
    else:
        path = concrete
        if route.strip_prefix is not None:
            prefix = route.strip_prefix.rstrip("/")
            path = prefix + concrete if concrete != "/" else prefix or "/"
        if gateway.match(path) is None:
            return None
    renamed: dict[str, str] = {}
    used: set[str] = set()

    def unmark(m: re.Match[str]) -> str:
        name = names[int(m.group(1))]
        used.add(name)
        return "{" + name + "}"

    # A parameter of the gateway's template that takes exactly one of the document's
    # parameters takes its name, so that the operation reads as the gateway is called.
    if route.upstream_path is not None:
        upstream_template = PathTemplate.parse(route.upstream_path)
        params = upstream_template.match(concrete) or {}
        for gateway_name, value in params.items():
            whole = _MARK.fullmatch(value)
            if whole is not None:
                renamed[names[int(whole.group(1))]] = gateway_name
    path = _MARK.sub(unmark, path)
    for old, new in renamed.items():
        path = path.replace("{" + old + "}", "{" + new + "}")
    documented = {renamed.get(n, n) for n in used}
    extra = [
        name for name in _DOC_PARAM.findall(path) if name not in documented and name not in names
    ]
    return path, renamed, extra


def _fill(template: str, params: dict[str, str]) -> str:
    """``template`` with the parameters it shares with the upstream path filled in (as they
    are: the values here are the marks), the others kept as ``{name}``."""

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        return params[name] if name in params else "{" + name + "}"

    return _ROUTE_PARAM.sub(fill, template)


def _operation(
    document: OpenAPIDocument,
    item: dict[str, Any],
    operation: dict[str, Any],
    renamed: dict[str, str],
    extra: list[str],
) -> dict[str, Any]:
    """A copy of the operation, with the path item's parameters, the path parameters renamed
    as the gateway names them, and the gateway's own path parameters."""
    out = copy.deepcopy(operation)
    merged: dict[tuple[str, str], Any] = {}
    for source in (item.get("parameters"), operation.get("parameters")):
        for parameter in source if isinstance(source, list) else ():
            resolved = _resolved(document, parameter)
            if resolved is None:
                continue
            key = (str(resolved.get("name")), str(resolved.get("in")))
            if key[1] == "path":
                # Written out, so that its name can follow the gateway's.
                parameter = {**resolved, "name": renamed.get(key[0], key[0])}
            merged[key] = copy.deepcopy(parameter)
    for name in extra:
        merged[(name, "path")] = _path_parameter(name)
    if merged:
        out["parameters"] = list(merged.values())
    return out


def _resolved(document: OpenAPIDocument, parameter: Any) -> dict[str, Any] | None:
    for _ in range(8):
        if not isinstance(parameter, dict):
            return None
        ref = parameter.get("$ref")
        if not isinstance(ref, str):
            return parameter
        found = resolve_pointer(document.data, ref)
        parameter = found[1] if found is not None else None
    return None


def _path_parameter(name: str, catch_all: bool = False) -> dict[str, Any]:
    description = (
        "The rest of the path (it may hold `/`)." if catch_all else "A segment of the path."
    )
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _made_up(route: Route, traits: _Traits) -> list[ExposedOperation]:
    """The operations of a route without a document's: one per method it takes."""
    template = PathTemplate.parse(route.match.path)
    catch_all = {m.group(1) for m in _ROUTE_PARAM.finditer(route.match.path) if m.group(2)}
    path = _ROUTE_PARAM.sub(lambda m: "{" + m.group(1) + "}", route.match.path)
    if len(path) > 1:
        path = path.rstrip("/")
    methods = [m.lower() for m in route.match.methods if m.lower() in METHODS] or list(ANY_METHOD)
    if "get" in methods and "head" in methods:
        methods.remove("head")
    found = []
    for method in methods:
        operation: dict[str, Any] = {
            "operationId": route.name if len(methods) == 1 else f"{route.name}.{method}",
            "summary": f"{method.upper()} {path}",
            "description": "The route has no operation of an OpenAPI document: its request and "
            "response are the service's own.",
            "responses": {"default": {"description": "The service's response."}},
        }
        if template.names:
            operation["parameters"] = [
                _path_parameter(name, name in catch_all) for name in template.names
            ]
        found.append(traits.operation(route, method, path, operation, documented=False))
    return found
