"""The ``validation`` policy at request time: the request checked against the operation of the
service's OpenAPI document that its method and path name, before it goes upstream.

    services:
      orders:
        openapi: orders.yaml
        policies:
          - type: validation

Everything is compiled when the snapshot is built (``compiler.py``); a request reads only
memory. A request that does not match gets one answer listing every error as
``{pointer, message}``: 400 ``validation-failed``, 415 for a content type the operation does
not take, 404/405 for what the document does not describe, 400 ``json-limit-exceeded`` or 413
for a body past the policy's limits.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from portico.gateway import problems
from portico.gateway.exchange import Exchange, Reply
from portico.gateway.headers import Headers
from portico.gateway.stats import LabelledCounter
from portico.identity.context import BuildContext
from portico.policies.validation.compiler import load_table
from portico.policies.validation.jsonbody import JsonLimits, JsonRejected, parse_json
from portico.policies.validation.operations import (
    JSON_TYPES_KEPT,
    Error,
    MediaType,
    Operation,
    OperationTable,
    PathEntry,
    find_media,
    is_json,
    schema_errors,
)
from portico.policies.validation.settings import ValidationSettings

__all__ = ["RequestValidation", "ResponseReporting", "build"]

log = logging.getLogger("portico.validation")

STATIC_PATHS_KEPT = 1024
_ACCEPT_FIELD = {"POST": "accept-post", "PATCH": "accept-patch"}
_OPERATION = "validation.operation"
"""Where the matched operation waits for the response check (``exchange.state``)."""


def _errors_member(errors: list[Error]) -> list[dict[str, str]]:
    return [{"pointer": pointer, "message": message} for pointer, message in errors]


def _single_content_type(headers: Headers) -> str | None:
    """The request's Content-Type field as sent, when it has exactly one."""
    field: str | None = None
    for name, value in headers.items:
        if name == "content-type":
            if field is not None:
                return None
            field = value
    return field


def _media_type(headers: Headers) -> tuple[str, str] | None:
    """The request's media type (lower case) and charset, or ``None`` without a Content-Type;
    two Content-Type fields read as none that fits."""
    fields = headers.get_all("content-type")
    if not fields:
        return None
    if len(fields) > 1:
        return "", ""
    field = fields[0]
    known = _MEDIA_TYPES.get(field)
    if known is not None:
        return known
    parsed = _parse_media_type(field)
    if len(_MEDIA_TYPES) >= _MEDIA_TYPES_KEPT:
        _MEDIA_TYPES.clear()  # the field is the client's: what is kept stays bounded
    _MEDIA_TYPES[field] = parsed
    return parsed


_MEDIA_TYPES: dict[str, tuple[str, str]] = {}
"""Content-Type fields already read: clients send the same few, and reading one costs more than
finding it."""
_MEDIA_TYPES_KEPT = 256


def _parse_media_type(field: str) -> tuple[str, str]:
    media, _, rest = field.partition(";")
    charset = ""
    for parameter in rest.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media.strip().lower(), charset


class RequestValidation:
    __slots__ = (
        "_failures",
        "_limits",
        "_max_body",
        "_max_errors",
        "_pass_undocumented",
        "_route",
        "_static",
        "_table",
        "needs_body",
    )

    def __init__(
        self,
        table: OperationTable,
        settings: ValidationSettings,
        route: str,
        failures: LabelledCounter | None,
    ) -> None:
        self._table = table
        self._static: dict[str, tuple[PathEntry, dict[str, str]]] = {}
        """Request paths (``exchange.path``) of this route that found a path of the document
        without parameters: its entry and no values (never changed), found without reading
        the path again. At most :data:`STATIC_PATHS_KEPT` (the paths are the clients')."""
        self._limits = JsonLimits(
            settings.max_depth, settings.max_array_length, settings.max_string_length
        )
        self._max_body = settings.max_body_size
        self._max_errors = settings.max_errors
        self._pass_undocumented = settings.undocumented == "pass"
        self._route = route
        self._failures = failures
        # Every body is read: an operation that takes none must be able to refuse one.
        self.needs_body = True

    def _path(self, exchange: Exchange) -> str:
        """The decoded path as the upstream gets it: after the route's ``strip_prefix``, or its
        ``upstream_path`` filled in with the parameters (decoded again)."""
        route = exchange.route
        if route is None:
            return exchange.path
        if route.rewrite is not None:
            return unquote(route.rewrite.expand(exchange.path_params))
        return route.upstream_path(exchange.path, exchange.path_params, False)

    def _count(self, direction: str) -> None:
        failures = self._failures
        if failures is not None:
            failures.inc((self._route, direction))

    def on_request(self, exchange: Exchange) -> Reply | None:
        found = self._static.get(exchange.path)
        if found is None:
            found = self._table.find(self._path(exchange))
            if found is not None and not found[1]:
                # A path of the document without parameters: its entry, found again by the
                # request's path as the route matched it (which decides the upstream path).
                if len(self._static) >= STATIC_PATHS_KEPT:
                    self._static.clear()
                self._static[exchange.path] = found
        if found is None:
            if self._pass_undocumented:
                return None
            self._count("request")
            return problems.problem(
                problems.OPERATION_NOT_FOUND,
                exchange.request_id,
                "the API document describes no operation at this path",
            )
        entry, path_values = found
        method = exchange.method
        operation = entry.operations.get(method)
        if operation is None and method == "HEAD":
            operation = entry.operations.get("GET")
        if operation is None:
            if self._pass_undocumented:
                return None
            self._count("request")
            return problems.problem(
                problems.METHOD_NOT_ALLOWED,
                exchange.request_id,
                f"the API document describes no {method} operation here",
                headers=Headers([("allow", entry.allow)]),
            )
        errors: list[Error] = []
        limit = self._max_errors
        operation.check_parameters(path_values, exchange.query, exchange.headers, errors, limit)
        reply = self._check_body(exchange, operation, errors)
        if reply is not None:
            self._count("request")
            return reply
        if errors:
            self._count("request")
            return problems.problem(
                problems.VALIDATION_FAILED,
                exchange.request_id,
                f"{len(errors)} error(s); each is in errors",
                errors=_errors_member(errors),
            )
        self._remember(exchange, operation)
        return None

    def _remember(self, exchange: Exchange, operation: Operation) -> None:
        return None

    def _check_body(
        self, exchange: Exchange, operation: Operation, errors: list[Error]
    ) -> Reply | None:
        body = exchange.body
        if body is None:
            body = b""
        if not body:
            if operation.body_required:
                errors.append(("", "a request body is required"))
            return None
        if not operation.has_body:
            errors.append(("", "this operation takes no request body"))
            return None
        field = _single_content_type(exchange.headers)
        known = operation.json_types.get(field) if field is not None else None
        if known is not None:
            return self._check_json(exchange, known, body, errors)
        media = _media_type(exchange.headers)
        spec = find_media(operation.body_content, media[0]) if media and media[0] else None
        if media is None or spec is None:
            said = "no Content-Type" if media is None else f"Content-Type {media[0] or '(two)'}"
            accepted = ", ".join(operation.body_content) or "none"
            # RFC 9110 §15.5.16: what the operation would take, where a field says it.
            fields = Headers()
            if exchange.method in _ACCEPT_FIELD:
                fields.add(_ACCEPT_FIELD[exchange.method], accepted)
            return problems.problem(
                problems.UNSUPPORTED_MEDIA_TYPE,
                exchange.request_id,
                f"{said}: this operation takes {accepted}",
                headers=fields,
            )
        if not (spec.json or is_json(media[0])):
            return None  # a declared non-JSON content is relayed unchecked
        if media[1] and media[1] not in ("utf-8", "utf8"):
            return problems.problem(
                problems.UNSUPPORTED_MEDIA_TYPE,
                exchange.request_id,
                f"charset {media[1]}: JSON is read as UTF-8 only",
            )
        if field is not None:
            kept = operation.json_types
            if len(kept) >= JSON_TYPES_KEPT:
                kept.clear()
            kept[field] = spec
        return self._check_json(exchange, spec, body, errors)

    def _check_json(
        self, exchange: Exchange, spec: MediaType, body: bytes, errors: list[Error]
    ) -> Reply | None:
        """A JSON body, of a content type the operation takes, against its schema."""
        if len(body) > self._max_body:
            return problems.too_large(exchange.request_id, self._max_body)
        try:
            value = parse_json(body, self._limits)
        except JsonRejected as exc:
            if exc.limit:
                return problems.problem(
                    problems.JSON_LIMIT_EXCEEDED,
                    exchange.request_id,
                    f"{exc.message} ({exc.limit})",
                    errors=[{"pointer": exc.pointer, "message": exc.message}],
                )
            errors.append((exc.pointer, exc.message))
            return None
        if spec.validator is not None:
            schema_errors(spec.validator, value, "", errors, self._max_errors)
        return None


class ResponseReporting(RequestValidation):
    """Also checks the upstream's JSON responses against the document; what does not match is
    logged and counted (``portico_validation_failures_total{direction="response"}``), never
    blocked."""

    __slots__ = ("response_body_limit",)

    def __init__(
        self,
        table: OperationTable,
        settings: ValidationSettings,
        route: str,
        failures: LabelledCounter | None,
    ) -> None:
        super().__init__(table, settings, route, failures)
        self.response_body_limit = settings.response_max_body_size

    def _remember(self, exchange: Exchange, operation: Operation) -> None:
        exchange.state[_OPERATION] = operation

    def on_response_body(
        self, exchange: Exchange, status: int, headers: Headers, body: bytes | None
    ) -> bytes | Reply | None:
        operation = exchange.state.get(_OPERATION)
        if body is None or not isinstance(operation, Operation):
            return None  # over the limit, or Portico's own answer: not checked
        errors = self._response_errors(operation, status, headers, body)
        if errors:
            self._count("response")
            first = "; ".join(f"{p or '/'}: {m}" for p, m in errors[:3])
            log.warning(
                "response of route %s (%s) status %d does not match the API document: %s "
                "(%d error(s); request %s)",
                self._route,
                operation.name,
                status,
                first,
                len(errors),
                exchange.request_id,
            )
        return None

    def _response_errors(
        self, operation: Operation, status: int, headers: Headers, body: bytes
    ) -> list[Error]:
        spec = operation.response(status)
        if spec is None:
            return [("", f"status {status} is not described")]
        if not spec.content:
            return [("", "the document describes no body")] if body else []
        media = _media_type(headers)
        found = find_media(spec.content, media[0]) if media and media[0] else None
        if found is None:
            said = media[0] if media else "no Content-Type"
            return [("", f"content type {said} is not described")]
        if not (found.json or is_json(media[0] if media else "")) or found.validator is None:
            return []
        try:
            value = parse_json(body, self._limits)
        except JsonRejected as exc:
            return [(exc.pointer, exc.message)]
        errors: list[Error] = []
        schema_errors(found.validator, value, "", errors, self._max_errors)
        return errors


def build(settings: ValidationSettings, context: BuildContext) -> RequestValidation:
    service = context.config.services.get(context.service_name)
    source = service.openapi if service is not None else None
    if source is None:
        raise ValueError(
            f"route {context.route_name}: the validation policy needs services."
            f"{context.service_name}.openapi"
        )
    table = load_table(source, settings.base_path)
    stats = context.extensions.stats
    failures = stats.counter(
        "portico_validation_failures",
        "Requests a route's validation policy refused (direction request), and upstream "
        "responses it found not to match the API document (direction response).",
        ("route", "direction"),
    )
    counted = failures if stats.enabled else None
    if settings.responses == "report":
        return ResponseReporting(table, settings, context.route_name, counted)
    return RequestValidation(table, settings, context.route_name, counted)
