"""An OpenAPI document's Schema Objects as JSON Schema 2020-12, for jsonschema-rs.

OpenAPI 3.1's schemas are JSON Schema 2020-12 already. OpenAPI 3.0's are a draft-4-era
dialect, turned into 2020-12 here:

- ``nullable: true`` adds ``null`` to ``type`` (and to ``enum``); without a ``type`` the schema
  becomes ``anyOf: [{type: null}, schema]``;
- ``exclusiveMinimum: true`` with ``minimum: 5`` (draft 4's booleans) becomes
  ``exclusiveMinimum: 5``, and likewise for the maximum;
- a ``$ref`` stands alone (3.0 ignores what is beside it);
- ``example``, ``discriminator``, ``xml`` and ``externalDocs`` are annotations to OpenAPI and
  are dropped (an ``example`` could otherwise be read as a subschema).

In both versions ``format: int32`` and ``int64`` add their ranges (JSON Schema checks formats of
strings only), and every ``$ref`` must point inside the document at something that exists: an
external reference would make the gateway fetch files or URLs, which it never does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from portico.policies.validation.document import OpenAPIDocument, Pointer

__all__ = ["SchemaConverter", "resolve_pointer", "walk_schemas"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_OPENAPI_ONLY = ("example", "discriminator", "xml", "externalDocs", "nullable")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def resolve_pointer(data: Any, ref: str) -> tuple[Pointer, Any] | None:
    """The place and value a local ``$ref`` (``#/components/schemas/Order``) names, or ``None``."""
    if not ref.startswith("#"):
        return None
    fragment = unquote(ref[1:])
    if fragment and not fragment.startswith("/"):
        return None
    pointer: list[str | int] = []
    node = data
    for raw in fragment.split("/")[1:] if fragment else ():
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
            pointer.append(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            pointer.append(int(part))
        else:
            return None
    return tuple(pointer), node


class SchemaConverter:
    """Converts the document's schemas; :attr:`problems` collects what cannot be used.

    ``direction`` is what the schemas will check: a property marked ``readOnly`` is not
    required of a request (the server sets it), one marked ``writeOnly`` not of a response."""

    def __init__(self, document: OpenAPIDocument, direction: str = "request") -> None:
        self.document = document
        self.legacy = document.version == "3.0"
        self.problems: list[str] = []
        self._exempt = "readOnly" if direction == "request" else "writeOnly"

    def convert(self, schema: Any, at: Pointer) -> Any:
        if isinstance(schema, bool):
            return schema
        if not isinstance(schema, dict):
            self.problems.append(self.document.problem(at, "a schema is a mapping"))
            return True
        ref = schema.get("$ref")
        if isinstance(ref, str):
            self._check_ref(ref, (*at, "$ref"))
            if self.legacy:
                return {"$ref": ref}
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _OPENAPI_ONLY or key.startswith("x-"):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {k: self.convert(v, (*at, key, k)) for k, v in value.items()}
            elif key in (*_SCHEMA_LISTS, "items") and isinstance(value, list):
                out[key] = [self.convert(v, (*at, key, i)) for i, v in enumerate(value)]
            elif (key in _SCHEMA_ONE or key == "items") and isinstance(value, dict | bool):
                out[key] = self.convert(value, (*at, key))
            else:
                out[key] = value
        required = out.get("required")
        properties = schema.get("properties")
        if isinstance(required, list) and isinstance(properties, dict):
            out["required"] = [
                name for name in required if not self._exempted(properties.get(name))
            ]
        if self.legacy:
            out = _legacy_bounds(out)
            if schema.get("nullable") is True:
                out = _nullable(out)
        fmt = out.get("format")
        if fmt in _INT_RANGES:
            low, high = _INT_RANGES[fmt]
            out["allOf"] = [*out.get("allOf", ()), {"minimum": low, "maximum": high}]
        return out

    def _exempted(self, schema: Any) -> bool:
        for _ in range(32):
            if not isinstance(schema, dict):
                return False
            if schema.get(self._exempt) is True:
                return True
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                return False
            found = resolve_pointer(self.document.data, ref)
            schema = found[1] if found else None
        return False

    def _check_ref(self, ref: str, at: Pointer) -> None:
        if not ref.startswith("#"):
            self.problems.append(
                self.document.problem(
                    at, f"{ref!r}: only references inside the document (#/...) are followed"
                )
            )
        elif resolve_pointer(self.document.data, ref) is None:
            self.problems.append(self.document.problem(at, f"{ref!r} names nothing here"))


def _legacy_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    for flag, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(flag)
        if isinstance(value, bool):
            if value and bound in schema:
                schema[flag] = schema.pop(bound)
            else:
                del schema[flag]
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        schema["type"] = [kind, "null"]
    elif isinstance(kind, list):
        if "null" not in kind:
            schema["type"] = [*kind, "null"]
    else:
        return {"anyOf": [{"type": "null"}, schema]}
    enum = schema.get("enum")
    if isinstance(enum, list) and None not in enum:
        schema["enum"] = [*enum, None]
    return schema


def walk_schemas(data: Any) -> Iterator[tuple[Pointer, Any]]:
    """Every Schema Object of an OpenAPI document that a request or response may meet, with its
    place (its own subschemas are the converter's)."""
    components = data.get("components")
    if isinstance(components, dict):
        for name, schema in _items(components.get("schemas")):
            yield ("components", "schemas", name), schema
        for kind in ("parameters", "headers"):
            for name, item in _items(components.get(kind)):
                yield from _parameter_schemas(item, ("components", kind, name))
        for name, item in _items(components.get("requestBodies")):
            yield from _content_schemas(item, ("components", "requestBodies", name))
        for name, item in _items(components.get("responses")):
            yield from _response_schemas(item, ("components", "responses", name))
    for path, item in _items(data.get("paths")):
        at: Pointer = ("paths", path)
        if not isinstance(item, dict):
            continue
        for i, parameter in enumerate(_list(item.get("parameters"))):
            yield from _parameter_schemas(parameter, (*at, "parameters", i))
        for method, operation in item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            op_at = (*at, method)
            for i, parameter in enumerate(_list(operation.get("parameters"))):
                yield from _parameter_schemas(parameter, (*op_at, "parameters", i))
            body = operation.get("requestBody")
            if isinstance(body, dict):
                yield from _content_schemas(body, (*op_at, "requestBody"))
            for status, response in _items(operation.get("responses")):
                yield from _response_schemas(response, (*op_at, "responses", status))


def _items(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        yield from value.items()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _parameter_schemas(item: Any, at: Pointer) -> Iterator[tuple[Pointer, Any]]:
    if not isinstance(item, dict):
        return
    if "schema" in item:
        yield (*at, "schema"), item["schema"]
    yield from _content_schemas(item, at)


def _content_schemas(item: Any, at: Pointer) -> Iterator[tuple[Pointer, Any]]:
    if not isinstance(item, dict):
        return
    for media, spec in _items(item.get("content")):
        if isinstance(spec, dict) and "schema" in spec:
            yield (*at, "content", media, "schema"), spec["schema"]


def _response_schemas(item: Any, at: Pointer) -> Iterator[tuple[Pointer, Any]]:
    if not isinstance(item, dict):
        return
    yield from _content_schemas(item, at)
    for name, header in _items(item.get("headers")):
        yield from _parameter_schemas(header, (*at, "headers", name))
