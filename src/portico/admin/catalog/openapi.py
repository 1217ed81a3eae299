"""One OpenAPI 3.1 document of every service an audience may see, as the gateway exposes it
(docs/catalog.md#the-merged-document).

- **Who sees what.** A service's ``audience`` is the narrowest that sees it: ``public`` ⊂
  ``partner`` ⊂ ``internal``. Services in ``design`` (not served) and ``retired`` (gone) are
  in no export.
- **Paths** are the gateway's (the routes'), never the backend's; operations are those of the
  services' documents that the routes reach (:mod:`.operations`), or made up from a route
  without one. Nothing of the backend is kept that a caller could not use: the documents'
  ``servers`` (backend addresses) and their ``security`` (the gateway's replaces it) go.
- **Components** of every document are merged: a name two services of the document use for
  different things is given each service's prefix (``OrdersV1Order``, ``OrdersV2Order``), and
  every ``$ref`` follows (the same name may so read differently in two audiences'
  documents); so are ``operationId`` clashes (one operation exposed by several routes, or two
  documents' alike): ``<route>.<operationId>``. OpenAPI 3.0 schemas become 3.1's
  (``nullable``, boolean exclusive bounds).
- **What the gateway adds**: the security schemes of the routes' ``auth`` entries
  (:mod:`.security`) and each operation's requirements with its scopes; the problem+json
  answers Portico itself gives (401 and 403 with ``auth``, 429 with ``RateLimit``,
  ``RateLimit-Policy`` and ``Retry-After`` with ``rate-limit``, 400 ``validation-failed`` with
  ``validation``, 410 after a sunset, and 502, 503 and 504 on every operation), sharing one
  ``Problem`` schema; ``deprecated: true`` and the ``Deprecation`` and ``Sunset`` fields on
  deprecated operations.

The document is made from the config alone, never from the store, so the same config makes
the same document (``info.version`` is a digest of its content).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from portico.admin.catalog.operations import (
    ExposedOperation,
    ServiceOperations,
    service_operations,
)
from portico.admin.catalog.security import RouteAuth, security_schemes
from portico.admin.problem_schema import problem_schema
from portico.config.catalog import Audience, visible_to
from portico.config.model import PorticoConfig
from portico.gateway import problems
from portico.gateway.problems import PROBLEM_CONTENT_TYPE

__all__ = ["COMPONENT_KINDS", "exported_services", "merged_document"]

OPENAPI_VERSION = "3.1.0"
COMPONENT_KINDS = (
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "links",
    "callbacks",
    "pathItems",
)
"""What the documents' components are merged of (their ``securitySchemes`` are not: the
gateway's replace them)."""
_PARAM = re.compile(r"\{([^{}/]+)\}")
_NOT_NAME = re.compile(r"[^A-Za-z0-9]+")
_REF = re.compile(r"^#/components/([A-Za-z]+)/(.+)$")
_DATA = frozenset({"example", "examples", "default", "enum", "const", "value"})

# -- what the gateway adds -------------------------------------------------------------------


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": _ref("schemas", "Problem")}}
_GATEWAY_SCHEMAS: dict[str, Any] = {
    "Problem": problem_schema(
        "An error Portico itself answers: RFC 9457 problem details, with a stable `type` "
        f"(`{problems.PROBLEM_BASE}<slug>`) and the request's id."
    )
}
_GATEWAY_HEADERS: dict[str, Any] = {
    "RateLimit": {
        "description": 'What is left of each limit that applies: `"<name>";r=<left>;t=<seconds '
        "until it resets>` (draft-ietf-httpapi-ratelimit-headers).",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'The limits that apply: `"<name>";q=<quota>;w=<window in seconds>`.',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds until the request would be allowed.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "WWW-Authenticate": {
        "description": "The challenges of the methods the operation accepts.",
        "schema": {"type": "string"},
    },
    "Deprecation": {
        "description": "When the operation was (or will be) deprecated, as `@<seconds since "
        "1970>` (RFC 9745).",
        "schema": {"type": "string"},
    },
    "Sunset": {
        "description": "When the operation stops answering, an HTTP date (RFC 8594); then 410.",
        "schema": {"type": "string"},
    },
}


def _problem_response(description: str, headers: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": _PROBLEM}
    if headers:
        out["headers"] = {name: _ref("headers", name) for name in headers}
    return out


_GATEWAY_RESPONSES: dict[str, Any] = {
    "PorticoBadRequest": _problem_response(
        "The request does not match the API document (`validation-failed`, with `errors`)."
    ),
    "PorticoUnauthorized": _problem_response(
        "No credentials, or credentials that are not valid (`unauthorized`, "
        "`invalid-credentials`).",
        ("WWW-Authenticate",),
    ),
    "PorticoForbidden": _problem_response(
        "The credentials do not grant the scopes the operation needs, or the caller may not "
        "use it (`insufficient-scope`, `forbidden`)."
    ),
    "PorticoGone": _problem_response("Past the sunset: the operation is retired (`route-sunset`)."),
    "PorticoTooManyRequests": _problem_response(
        "A rate limit or quota is spent (`rate-limited`).",
        ("RateLimit", "RateLimit-Policy", "Retry-After"),
    ),
    "PorticoBadGateway": _problem_response("The service failed (`upstream-unavailable`)."),
    "PorticoServiceUnavailable": _problem_response(
        "No healthy instance of the service, or too many requests in progress "
        "(`no-healthy-upstream`, `concurrency-limit-exceeded`)."
    ),
    "PorticoGatewayTimeout": _problem_response(
        "The service did not answer in time (`upstream-timeout`)."
    ),
}
_RESERVED = {"schemas": set(_GATEWAY_SCHEMAS), "responses": set(_GATEWAY_RESPONSES)}
_RESERVED["headers"] = set(_GATEWAY_HEADERS)


def _gateway_responses(exposed: ExposedOperation) -> dict[str, Any]:
    wanted: dict[str, str] = {}
    if exposed.validated:
        wanted["400"] = "PorticoBadRequest"
    if exposed.auth is not None:
        wanted["401"] = "PorticoUnauthorized"
        wanted["403"] = "PorticoForbidden"
    if exposed.deprecation is not None and exposed.deprecation.sunset is not None:
        wanted["410"] = "PorticoGone"
    if exposed.rate_limited:
        wanted["429"] = "PorticoTooManyRequests"
    wanted.update(
        {
            "502": "PorticoBadGateway",
            "503": "PorticoServiceUnavailable",
            "504": "PorticoGatewayTimeout",
        }
    )
    return {status: _ref("responses", name) for status, name in wanted.items()}


# -- the document -----------------------------------------------------------------------------


def exported_services(config: PorticoConfig, audience: Audience) -> list[str]:
    """The services an audience's export holds, by name."""
    return sorted(
        name
        for name, service in config.services.items()
        if visible_to(service.audience, audience)
        and service.lifecycle.state not in ("design", "retired")
    )


def merged_document(
    config: PorticoConfig,
    audience: Audience,
    *,
    title: str | None = None,
    servers: Sequence[str] = (),
    service: str | None = None,
) -> dict[str, Any]:
    """The merged OpenAPI 3.1 document of ``audience``; ``servers``: the gateway's URLs as its
    callers reach it (none: the document's own origin); ``service``: that service's operations
    alone, whatever its lifecycle (its own document, as the gateway exposes it)."""
    merger = _Merger(config, audience)
    names = [service] if service is not None else exported_services(config, audience)
    found = [service_operations(config, name) for name in names]
    merger.clashing = _clashing(found)
    for operations in found:
        merger.add_service(operations)
    merger.add_operations()
    return merger.document(title, servers)


class _Merger:
    def __init__(self, config: PorticoConfig, audience: Audience) -> None:
        self.config = config
        self.audience = audience
        self.paths: dict[str, dict[str, Any]] = {}
        self.shapes: dict[str, str] = {}
        """A path's shape (its parameters unnamed) -> the template first written for it."""
        self.components: dict[str, dict[str, Any]] = {}
        self.tags: list[dict[str, Any]] = []
        self.auths: list[RouteAuth] = []
        self.scope_notes: dict[str, str] = {}
        self.clashing: set[tuple[str, str]] = set()
        """Components named alike by several documents for different things: each is given
        its service's prefix."""
        self.pending: list[tuple[ExposedOperation, dict[str, Any]]] = []
        self.exposed: list[tuple[ExposedOperation, dict[str, Any]]] = []

    # -- services --------------------------------------------------------------------------

    def add_service(self, found: ServiceOperations) -> None:
        name = found.name
        service = found.service
        tag: dict[str, Any] = {"name": name}
        if service.description:
            tag["description"] = service.description
        tag["x-portico-api"] = service.api or name
        if service.version is not None:
            tag["x-portico-version"] = service.version
        tag["x-portico-lifecycle"] = service.lifecycle.state
        if service.tags:
            tag["x-portico-tags"] = list(service.tags)
        if service.owner and self.audience == "internal":
            tag["x-portico-owner"] = service.owner
        self.tags.append(tag)
        renames: dict[tuple[str, str], str] = {}
        if found.document is not None:
            data = found.document.data
            legacy = found.document.version == "3.0"
            renames = self._components(name, data, legacy)
            self._scope_notes(data)
        else:
            legacy = False
        for exposed in found.operations:
            operation = (
                _rewritten(exposed.operation, renames, legacy)
                if exposed.documented
                else exposed.operation
            )
            self.pending.append((exposed, operation))

    def add_operations(self) -> None:
        # A route without header or host conditions describes its method and path first: it
        # is what a caller gets without them; the others are its alternatives.
        for exposed, operation in sorted(self.pending, key=lambda p: bool(p[0].conditions)):
            self._add(exposed, operation)

    def _components(
        self, service: str, data: dict[str, Any], legacy: bool
    ) -> dict[tuple[str, str], str]:
        """The document's components merged in; a name taken by something else is prefixed.
        Returns the renames, ``(kind, name) -> new name``."""
        given = data.get("components")
        if not isinstance(given, dict):
            return {}
        renames: dict[tuple[str, str], str] = {}
        for kind in COMPONENT_KINDS:
            entries = given.get(kind)
            if not isinstance(entries, dict):
                continue
            for name in entries:
                renames[(kind, name)] = name
        own = {kind: {name for k, name in renames if k == kind} for kind in COMPONENT_KINDS}
        for key in renames:
            if key in self.clashing:
                renames[key] = self._free_name(key[0], _prefix(service) + key[1], own[key[0]])
        # Every name is decided before any is merged, as the values would be merged: a
        # component alike in two documents that refers to one renamed is not alike any more.
        changed = True
        while changed:
            changed = False
            for (kind, name), current in renames.items():
                if current != name:
                    continue
                taken = self.components.get(kind, {})
                if name in _RESERVED.get(kind, set()) or (
                    name in taken and taken[name] != _rewritten(given[kind][name], renames, legacy)
                ):
                    renames[(kind, name)] = self._free_name(
                        kind, _prefix(service) + name, own[kind]
                    )
                    changed = True
        for (kind, name), new in renames.items():
            value = _rewritten(given[kind][name], renames, legacy)
            self.components.setdefault(kind, {}).setdefault(new, value)
        return renames

    def _free_name(self, kind: str, wanted: str, own: set[str]) -> str:
        taken = self.components.get(kind, {})
        name, n = wanted, 1
        while name in taken or name in own or name in _RESERVED.get(kind, set()):
            n += 1
            name = f"{wanted}{n}"
        return name

    def _scope_notes(self, data: dict[str, Any]) -> None:
        schemes = (data.get("components") or {}).get("securitySchemes") or {}
        for scheme in schemes.values() if isinstance(schemes, dict) else ():
            flows = scheme.get("flows") if isinstance(scheme, dict) else None
            for flow in flows.values() if isinstance(flows, dict) else ():
                scopes = flow.get("scopes") if isinstance(flow, dict) else None
                for scope, note in scopes.items() if isinstance(scopes, dict) else ():
                    if isinstance(note, str) and note:
                        self.scope_notes.setdefault(str(scope), note)

    # -- operations ------------------------------------------------------------------------

    def _add(self, exposed: ExposedOperation, operation: dict[str, Any]) -> None:
        path, renamed = self._path(exposed.path)
        operation = copy.deepcopy(operation)
        if renamed:
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter.get("name") in renamed:
                    parameter["name"] = renamed[parameter["name"]]
        item = self.paths.setdefault(path, {})
        if exposed.method in item:
            # Another route answers this method and path too, when its conditions hold.
            kept = item[exposed.method]
            kept.setdefault("x-portico-alternatives", []).append(
                {"service": exposed.service, **exposed.conditions}
            )
            return
        for key in ("servers", "security", "tags", "callbacks"):
            operation.pop(key, None)
        operation["tags"] = [exposed.service]
        if exposed.conditions:
            operation["x-portico-conditions"] = dict(exposed.conditions)
        if exposed.auth is not None:
            operation["security"] = exposed.auth.requirements()
            self.auths.append(exposed.auth)
        if exposed.deprecated:
            operation["deprecated"] = True
        responses = operation.setdefault("responses", {})
        for status, response in _gateway_responses(exposed).items():
            responses.setdefault(status, response)
        if exposed.deprecation is not None:
            for response in responses.values():
                if isinstance(response, dict) and "$ref" not in response:
                    headers = response.setdefault("headers", {})
                    headers.setdefault("Deprecation", _ref("headers", "Deprecation"))
                    if exposed.deprecation.sunset is not None:
                        headers.setdefault("Sunset", _ref("headers", "Sunset"))
        item[exposed.method] = operation
        self.exposed.append((exposed, operation))

    def _path(self, path: str) -> tuple[str, dict[str, str]]:
        """The template already written for paths of this shape (OpenAPI allows one), and
        how ``path``'s parameters are named there."""
        shape = _PARAM.sub("{}", path)
        first = self.shapes.setdefault(shape, path)
        if first == path:
            return path, {}
        return first, dict(zip(_PARAM.findall(path), _PARAM.findall(first), strict=True))

    # -- the whole -------------------------------------------------------------------------

    def document(self, title: str | None, servers: Sequence[str]) -> dict[str, Any]:
        self._unique_operation_ids()
        components: dict[str, Any] = {}
        schemes = security_schemes(self.config, self.auths, self.scope_notes)
        if schemes:
            components["securitySchemes"] = schemes
        schemas = {**self.components.get("schemas", {}), **_GATEWAY_SCHEMAS}
        responses = {**self.components.get("responses", {}), **_GATEWAY_RESPONSES}
        headers = {**self.components.get("headers", {}), **_GATEWAY_HEADERS}
        for kind in COMPONENT_KINDS:
            merged = {"schemas": schemas, "responses": responses, "headers": headers}.get(
                kind, self.components.get(kind)
            )
            if merged:
                components[kind] = dict(sorted(merged.items()))
        body: dict[str, Any] = {
            "paths": dict(sorted(self.paths.items())),
            "components": components,
            "tags": self.tags,
        }
        digest = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()[:12]
        info: dict[str, Any] = {
            "title": title or f"APIs for {self.audience} callers",
            "version": digest,
            "description": (
                f"Every service Portico serves to {self.audience} callers, as the gateway "
                "exposes it: its paths, the credentials and scopes each operation needs, and "
                "the errors the gateway itself answers (application/problem+json, RFC 9457). "
                "Made by `portico catalog export`; `info.version` is a digest of the content."
            ),
        }
        document: dict[str, Any] = {"openapi": OPENAPI_VERSION, "info": info}
        if servers:
            document["servers"] = [{"url": url} for url in servers]
        document.update(body)
        return document

    def _unique_operation_ids(self) -> None:
        counts: dict[str, int] = {}
        for _, operation in self.exposed:
            found = operation.get("operationId")
            if isinstance(found, str):
                counts[found] = counts.get(found, 0) + 1
        taken: set[str] = set()
        for exposed, operation in self.exposed:
            found = operation.get("operationId")
            if not isinstance(found, str):
                continue
            if counts[found] > 1:
                found = f"{exposed.route}.{found}"
            while found in taken:
                found += "_"
            taken.add(found)
            operation["operationId"] = found


def _clashing(found: list[ServiceOperations]) -> set[tuple[str, str]]:
    """``(kind, name)`` of the components several documents give different values."""
    values: dict[tuple[str, str], set[str]] = {}
    for operations in found:
        document = operations.document
        given = document.data.get("components") if document is not None else None
        if not isinstance(given, dict):
            continue
        for kind in COMPONENT_KINDS:
            entries = given.get(kind)
            for name, value in entries.items() if isinstance(entries, dict) else ():
                text = json.dumps(value, sort_keys=True, default=str)
                values.setdefault((kind, name), set()).add(text)
    return {key for key, texts in values.items() if len(texts) > 1}


def _prefix(service: str) -> str:
    """``orders-v1`` -> ``OrdersV1``: a component name's prefix."""
    return "".join(part[:1].upper() + part[1:] for part in _NOT_NAME.split(service) if part)


def _rewritten(value: Any, renames: dict[tuple[str, str], str], legacy: bool) -> Any:
    """A copy of ``value`` with its ``$ref`` to renamed components followed, and (``legacy``)
    its OpenAPI 3.0 schemas in 3.1's terms."""
    if isinstance(value, list):
        return [_rewritten(item, renames, legacy) for item in value]
    if not isinstance(value, dict):
        return value
    out = {
        # An example's data is data, whatever keys it has: no schema keyword is read in it.
        key: _rewritten(item, renames, legacy and key not in _DATA)
        for key, item in value.items()
    }
    ref = out.get("$ref")
    if isinstance(ref, str):
        match = _REF.match(ref)
        if match is not None:
            kind = match.group(1)
            name = match.group(2).replace("~1", "/").replace("~0", "~")
            new = renames.get((kind, name))
            if new is not None and new != name:
                out["$ref"] = f"#/components/{kind}/{new.replace('~', '~0').replace('/', '~1')}"
    if legacy:
        _schema_to_31(out)
    return out


def _schema_to_31(schema: dict[str, Any]) -> None:
    """OpenAPI 3.0's schema keywords as 3.1 (JSON Schema 2020-12) says them, in place."""
    if schema.get("nullable") is True:
        del schema["nullable"]
        kind = schema.get("type")
        if isinstance(kind, str):
            schema["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            schema["type"] = [*kind, "null"]
        if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
    elif schema.get("nullable") is False:
        del schema["nullable"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        flag = schema.get(exclusive)
        if isinstance(flag, bool):
            del schema[exclusive]
            if flag and bound in schema:
                schema[exclusive] = schema.pop(bound)
