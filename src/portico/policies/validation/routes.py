"""Portico routes from an OpenAPI document: one route per operation, for ``portico routes
from-openapi``.

Each route is named by its ``operationId`` (made a valid route name), matches the operation's
method and path (the document's ``servers`` base path and ``--prefix`` before it, the prefix
stripped on the way upstream), and carries an ``auth`` entry when the operation (or the
document) has ``security``: the schemes become Portico's methods (``apiKey`` → ``api_key``,
``oauth2`` and ``http`` bearer → ``oauth``, ``openIdConnect`` → ``jwt:<scheme name>``,
``mutualTLS`` → ``mtls``) and the scopes the route's ``scopes``.
"""

from __future__ import annotations

import re
from typing import Any

from portico.policies.validation.compiler import base_path_of
from portico.policies.validation.document import OpenAPIDocument

__all__ = ["routes_from_document"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PLACEHOLDER = re.compile(r"\{([^{}/]+)\}")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_PARAM = re.compile(r"[^A-Za-z0-9_]+")


def routes_from_document(
    document: OpenAPIDocument, service: str, prefix: str = ""
) -> tuple[list[dict[str, Any]], list[str]]:
    """The routes, and notes on what could not be said exactly (printed as comments)."""
    data = document.data
    prefix = prefix.rstrip("/")
    base = base_path_of(data)
    schemes = (data.get("components") or {}).get("securitySchemes") or {}
    default_security = data.get("security")
    routes: list[dict[str, Any]] = []
    notes: list[str] = []
    names: set[str] = set()
    for template, item in (data.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        path = prefix + base + _portico_template(template, notes)
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            name = _unique(_route_name(operation, method, template), names)
            route: dict[str, Any] = {
                "name": name,
                "match": {"path": path or "/", "methods": [method.upper()]},
                "service": service,
            }
            if prefix:
                route["strip_prefix"] = prefix
            security = operation.get("security", default_security)
            auth = _auth(security, schemes, name, notes)
            if auth is not None:
                route["policies"] = [auth]
            routes.append(route)
    return routes, notes


def _portico_template(template: str, notes: list[str]) -> str:
    segments = []
    for segment in template.strip("/").split("/"):
        names = _PLACEHOLDER.findall(segment)
        if not names:
            segments.append(segment)
            continue
        name = _NOT_PARAM.sub("_", names[0]).strip("_") or "param"
        if name[0].isdigit():
            name = "p" + name
        if segment != "{" + names[0] + "}":
            notes.append(f"{template}: the segment {segment} is matched as a whole ({{{name}}})")
        segments.append("{" + name + "}")
    return "/" + "/".join(segments) if segments != [""] else ""


def _route_name(operation: dict[str, Any], method: str, template: str) -> str:
    found = operation.get("operationId")
    if isinstance(found, str) and _NOT_NAME.sub("-", found).strip("-"):
        return _NOT_NAME.sub("-", found).strip("-")
    slug = _NOT_NAME.sub("-", template.replace("{", "").replace("}", "")).strip("-")
    return f"{method}-{slug}" if slug else method


def _unique(name: str, names: set[str]) -> str:
    candidate, n = name, 1
    while candidate in names:
        n += 1
        candidate = f"{name}-{n}"
    names.add(candidate)
    return candidate


def _auth(
    security: Any, schemes: dict[str, Any], route: str, notes: list[str]
) -> dict[str, Any] | None:
    if not isinstance(security, list) or not security:
        return None
    if any(isinstance(r, dict) and not r for r in security):
        return None  # {} among the alternatives: anonymous access is allowed
    methods: list[str] = []
    scope_sets: list[tuple[str, ...]] = []
    for requirement in security:
        if not isinstance(requirement, dict):
            continue
        for scheme_name, scopes in requirement.items():
            method = _method(scheme_name, schemes.get(scheme_name))
            if method is None:
                notes.append(f"{route}: security scheme {scheme_name!r} has no Portico method")
                continue
            if method not in methods:
                methods.append(method)
            if isinstance(scopes, list) and scopes:
                scope_sets.append(tuple(str(s) for s in scopes))
    if not methods:
        return None
    entry: dict[str, Any] = {"type": "auth", "methods": methods}
    distinct = list(dict.fromkeys(scope_sets))
    if len(distinct) == 1:
        entry["scopes"] = list(distinct[0])
    elif distinct:
        # Alternatives with their own scopes: any of them lets the request in.
        entry["scopes"] = {"any_of": sorted({s for scopes in distinct for s in scopes})}
        notes.append(f"{route}: alternative security requirements read as any of their scopes")
    return entry


def _method(name: str, scheme: Any) -> str | None:
    if not isinstance(scheme, dict):
        return None
    kind = scheme.get("type")
    if kind == "apiKey":
        return "api_key"
    if kind == "oauth2" or (kind == "http" and str(scheme.get("scheme")).lower() == "bearer"):
        return "oauth"
    if kind == "openIdConnect":
        return f"jwt:{_NOT_NAME.sub('-', name)}"
    if kind == "mutualTLS":
        return "mtls"
    return None
