"""A service's OpenAPI document compiled, once, into the :class:`OperationTable` the policy
reads per request.

The document's Schema Objects are converted (``schemas.py``) into a skeleton that keeps each
one at its place in the document, so the document's own ``$ref`` pointers resolve unchanged;
jsonschema-rs compiles the skeleton once (``validator_map_for``) and each parameter, body and
response gets the validator at its pointer. Formats are checked (``date-time``, ``uuid``,
``email``...), unknown ones ignored, and nothing is fetched from the network.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs

from portico.policies.validation.document import (
    DocumentError,
    OpenAPIDocument,
    Pointer,
    load_document,
)
from portico.policies.validation.operations import (
    MediaType,
    Operation,
    OperationTable,
    Parameter,
    PathEntry,
    ResponseSpec,
    is_json,
)
from portico.policies.validation.schemas import SchemaConverter, resolve_pointer, walk_schemas

__all__ = ["base_path_of", "compile_document", "load_table"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PLACEHOLDER = re.compile(r"\{([^{}/]+)\}")
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_DEFAULT_STYLE = {"query": "form", "cookie": "form", "path": "simple", "header": "simple"}
_TABLES: dict[tuple[str, int, int], OperationTable] = {}
_TABLES_KEPT = 16


def load_table(path: str | Path, base_path: str | None = None) -> OperationTable:
    """The compiled document at ``path``: compiled again only when the file changed (routes of
    one service, and successive snapshots, share it). Raises :class:`DocumentError`."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
    except OSError as exc:
        raise DocumentError([f"{path}: cannot read the OpenAPI document: {exc.strerror}"]) from None
    key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    table = _TABLES.get(key)
    if table is None:
        table = compile_document(load_document(path))
        if len(_TABLES) >= _TABLES_KEPT:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = table
    if base_path is not None and base_path != table.base_path:
        return OperationTable(base_path.rstrip("/"), list(table.entries))
    return table


def base_path_of(data: dict[str, Any]) -> str:
    """The path of the document's first ``servers`` URL (``https://api.example.com/v1`` and
    ``/v1`` give ``/v1``), without a trailing slash; empty without one."""
    servers = data.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    url = servers[0].get("url")
    if not isinstance(url, str) or "{" in url:
        return ""
    return urlsplit(url).path.rstrip("/")


def compile_document(document: OpenAPIDocument) -> OperationTable:
    return _Compiler(document).table()


class _Compiler:
    def __init__(self, document: OpenAPIDocument) -> None:
        self.document = document
        self.data = document.data
        self.problems: list[str] = []
        self.validators: dict[str, jsonschema_rs.ValidatorMap] = {}

    def problem(self, at: Pointer, message: str) -> None:
        self.problems.append(self.document.problem(at, message))

    def table(self) -> OperationTable:
        # Twice: requests and responses differ on readOnly and writeOnly properties.
        for direction in ("request", "response"):
            converter = SchemaConverter(self.document, direction)
            skeleton: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
            for at, schema in walk_schemas(self.data):
                _place(skeleton, at, converter.convert(schema, at))
            if converter.problems:
                self.problems.extend(converter.problems)
                break
            try:
                self.validators[direction] = jsonschema_rs.validator_map_for(
                    skeleton, validate_formats=True, ignore_unknown_formats=True, offline=True
                )
            except (ValueError, jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as e:
                self.problems.append(f"{self.document.path}: a schema cannot be compiled: {e}")
                break
        entries: list[PathEntry] = []
        if not self.problems:
            paths = self.data.get("paths") or {}
            for template, item in paths.items():
                entry = self._path(template, item)
                if entry is not None:
                    entries.append(entry)
        if self.problems:
            raise DocumentError(self.problems)
        # A literal segment is more specific than a parameter; among equals, longer first.
        entries.sort(
            key=lambda e: (
                -len([s for s in e.template.split("/") if s and "{" not in s]),
                -len(_PLACEHOLDER.sub("", e.template)),
            )
        )
        return OperationTable(base_path_of(self.data), entries)

    def _validator(self, at: Pointer, direction: str = "request") -> jsonschema_rs.Validator | None:
        key = "#" + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in at)
        found = self.validators[direction].get(key)
        if found is None:
            self.problem(at, "this schema could not be compiled")
        return found

    def _resolve(self, value: Any, at: Pointer) -> tuple[Any, Pointer]:
        """A Reference Object followed (through chains), with the place it led to."""
        seen = 0
        while isinstance(value, dict) and isinstance(value.get("$ref"), str):
            ref = value["$ref"]
            found = resolve_pointer(self.data, ref)
            seen += 1
            if found is None or seen > 32:
                self.problem((*at, "$ref"), f"{ref!r} names nothing here")
                return None, at
            at, value = found
        return value, at

    def _path(self, template: str, item: Any) -> PathEntry | None:
        at: Pointer = ("paths", template)
        item, item_at = self._resolve(item, at)
        if not isinstance(item, dict):
            return None
        names = tuple(_PLACEHOLDER.findall(template))
        regex = _template_regex(template)
        if regex is None:
            self.problem(at, "a path template is a path of literals and {name} parameters")
            return None
        common = self._parameters(item.get("parameters"), (*item_at, "parameters"))
        operations: dict[str, Operation] = {}
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            op_at = (*item_at, method)
            own = self._parameters(operation.get("parameters"), (*op_at, "parameters"))
            merged = {**common, **own}
            declared = {name for (name, where) in merged if where == "path"}
            for name in names:
                if name not in declared:
                    self.problem(op_at, f"the path parameter {name!r} is not declared")
            for name in declared - set(names):
                self.problem(op_at, f"the path parameter {name!r} is not in the path {template}")
            operations[method.upper()] = self._operation(
                method.upper(), template, operation, op_at, list(merged.values())
            )
        return PathEntry(template, regex, names, operations)

    def _parameters(self, value: Any, at: Pointer) -> dict[tuple[str, str], Parameter]:
        out: dict[tuple[str, str], Parameter] = {}
        if not isinstance(value, list):
            return out
        for i, raw in enumerate(value):
            spec, spec_at = self._resolve(raw, (*at, i))
            if not isinstance(spec, dict):
                continue
            name, where = spec.get("name"), spec.get("in")
            if not isinstance(name, str) or where not in ("path", "query", "header", "cookie"):
                continue
            if where == "header" and name.lower() in _IGNORED_HEADERS:
                continue  # described elsewhere (OpenAPI says to ignore them)
            key_name = name.lower() if where == "header" else name
            out[(key_name, where)] = self._parameter(spec, spec_at, key_name, where)
        return out

    def _parameter(self, spec: dict[str, Any], at: Pointer, name: str, where: str) -> Parameter:
        style = spec.get("style") or _DEFAULT_STYLE[where]
        explode = spec.get("explode", style == "form")
        validator: jsonschema_rs.Validator | None = None
        json_content = False
        schema: Any = None
        if "schema" in spec:
            schema = spec["schema"]
            validator = self._validator((*at, "schema"))
        else:
            content = spec.get("content")
            if isinstance(content, dict) and content:
                media = next(iter(content))
                if is_json(media.lower()) and isinstance(content[media], dict):
                    json_content = True
                    if "schema" in content[media]:
                        schema = content[media]["schema"]
                        validator = self._validator((*at, "content", media, "schema"))
        schema = self._schema(schema)
        kinds = _kinds(schema)
        shape = "array" if kinds == ("array",) else "object" if kinds == ("object",) else "scalar"
        if json_content:
            shape = "scalar"
        items = self._schema(schema.get("items")) if isinstance(schema, dict) else None
        properties = schema.get("properties") if isinstance(schema, dict) else None
        property_kinds = (
            {k: _kinds(self._schema(v)) for k, v in properties.items()}
            if isinstance(properties, dict)
            else {}
        )
        return Parameter(
            name=name,
            location=where,
            required=bool(spec.get("required", where == "path")),
            style=str(style),
            explode=bool(explode),
            shape=shape,
            kinds=kinds,
            item_kinds=_kinds(items),
            property_kinds=property_kinds,
            validator=validator,
            json=json_content,
            allow_empty=bool(spec.get("allowEmptyValue", False)),
        )

    def _schema(self, schema: Any) -> Any:
        """A schema with its ``$ref`` (and a lone ``allOf``) followed, to read its type."""
        for _ in range(32):
            if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
                found = resolve_pointer(self.data, schema["$ref"])
                schema = found[1] if found else None
            elif (
                isinstance(schema, dict)
                and "type" not in schema
                and isinstance(schema.get("allOf"), list)
                and len(schema["allOf"]) == 1
            ):
                schema = schema["allOf"][0]
            else:
                return schema
        return schema

    def _operation(
        self,
        method: str,
        template: str,
        spec: dict[str, Any],
        at: Pointer,
        parameters: list[Parameter],
    ) -> Operation:
        body, body_at = self._resolve(spec.get("requestBody"), (*at, "requestBody"))
        has_body = isinstance(body, dict)
        content = self._content(body, body_at) if has_body else {}
        responses: dict[str, ResponseSpec] = {}
        for status, response in (spec.get("responses") or {}).items():
            resolved, response_at = self._resolve(response, (*at, "responses", status))
            if isinstance(resolved, dict):
                key = str(status)
                key = key.upper() if key.lower().endswith("xx") else key  # 2xx is 2XX
                responses[key] = ResponseSpec(self._content(resolved, response_at))
        name = spec.get("operationId")
        return Operation(
            method=method,
            path=template,
            name=name if isinstance(name, str) else f"{method} {template}",
            parameters=parameters,
            has_body=has_body,
            body_required=bool(body.get("required", False)) if has_body else False,
            body_content=content,
            responses=responses,
        )

    def _content(
        self, item: dict[str, Any], at: Pointer, direction: str = "request"
    ) -> dict[str, MediaType]:
        out: dict[str, MediaType] = {}
        content = item.get("content")
        if not isinstance(content, dict):
            return out
        for media, spec in content.items():
            name = media.split(";", 1)[0].strip().lower()
            validator = None
            if isinstance(spec, dict) and "schema" in spec:
                validator = self._validator((*at, "content", media, "schema"), direction)
            out[name] = MediaType(name, validator, is_json(name))
        return out


def _place(skeleton: dict[str, Any], at: Pointer, schema: Any) -> None:
    node: Any = skeleton
    for i, part in enumerate(at[:-1]):
        following = at[i + 1]
        if isinstance(node, dict):
            node = node.setdefault(str(part), [] if isinstance(following, int) else {})
        else:
            assert isinstance(part, int)
            while len(node) <= part:
                node.append([] if isinstance(following, int) else {})
            node = node[part]
    last = at[-1]
    if isinstance(node, dict):
        node[str(last)] = schema
    else:
        assert isinstance(last, int)
        while len(node) <= last:
            node.append({})
        node[last] = schema


def _template_regex(template: str) -> re.Pattern[str] | None:
    if not template.startswith("/"):
        return None
    out = ["^"]
    position = 0
    for m in _PLACEHOLDER.finditer(template):
        out.append(re.escape(template[position : m.start()]))
        out.append("([^/]+)")
        position = m.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        return None
    out.append(re.escape(rest.rstrip("/") if len(template) > 1 else rest))
    out.append("/?$" if len(template) > 1 else "$")
    return re.compile("".join(out))


def _kinds(schema: Any) -> tuple[str, ...]:
    """The JSON types a parameter's text may be read as, in the order to try them."""
    if not isinstance(schema, dict):
        return ()
    kind = schema.get("type")
    kinds: set[str] = set()
    if isinstance(kind, str):
        kinds.add(kind)
    elif isinstance(kind, list):
        kinds.update(k for k in kind if isinstance(k, str))
    for key in ("oneOf", "anyOf"):
        for part in schema.get(key) or ():
            if isinstance(part, dict) and isinstance(part.get("type"), str):
                kinds.add(part["type"])
    order = ("integer", "number", "boolean", "array", "object", "string")
    return tuple(k for k in order if k in kinds)
