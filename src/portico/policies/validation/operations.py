"""The operations of a service's OpenAPI document as the policy meets them per request: found
by method and path, their parameters read from the request (style and explode as the document
says), turned from text into the types their schemas ask for, and validated.

Everything here is made once per document (``compiler.py``) and only read per request.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote_plus

import jsonschema_rs

from portico.gateway.headers import Headers

__all__ = [
    "JSON_TYPES_KEPT",
    "Error",
    "MediaType",
    "Operation",
    "OperationTable",
    "Parameter",
    "PathEntry",
    "ResponseSpec",
    "coerce",
    "parse_query",
    "schema_errors",
]

Error = tuple[str, str]
"""``(pointer, message)``: ``("/query/limit", "-1 is less than the minimum of 1")``."""

_INTEGER = re.compile(r"-?[0-9]{1,300}\Z")
_NUMBER = re.compile(r"-?[0-9]{1,300}(?:\.[0-9]{1,300})?(?:[eE][+-]?[0-9]{1,4})?\Z")
_MESSAGE_LIMIT = 300


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def schema_errors(
    validator: jsonschema_rs.Validator, value: object, base: str, out: list[Error], limit: int
) -> None:
    """Append every error of ``value`` (up to ``limit`` in ``out``), pointed below ``base``."""
    if validator.is_valid(value):  # the common case, without building an error iterator
        return
    for error in validator.iter_errors(value):
        if len(out) >= limit:
            return
        pointer = base + "".join("/" + escape(str(part)) for part in error.instance_path)
        message = error.message
        if len(message) > _MESSAGE_LIMIT:
            message = message[: _MESSAGE_LIMIT - 3] + "..."
        out.append((pointer, message))


def coerce(text: str, kinds: tuple[str, ...]) -> object:
    """``text`` as the first of ``kinds`` (JSON Schema types) it reads as; the text itself when
    none fits, which the schema then refuses with its own message."""
    for kind in kinds:
        if kind == "integer":
            if _INTEGER.match(text):
                return int(text)
        elif kind == "number":
            if _NUMBER.match(text):
                if _INTEGER.match(text):
                    return int(text)
                number = float(text)
                if number - number == 0.0:  # finite
                    return number
        elif kind == "boolean":
            if text == "true":
                return True
            if text == "false":
                return False
    return text


def parse_query(query: str, out: dict[str, list[str]]) -> bool:
    """Fill ``out`` with each name's values, in order; ``False`` when a name or value is not
    UTF-8 once percent-decoded."""
    if not query:
        return True
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            key = unquote_plus(name, errors="strict")
            text = unquote_plus(value, errors="strict")
        except UnicodeDecodeError:
            return False
        found = out.get(key)
        if found is None:
            out[key] = [text]
        else:
            found.append(text)
    return True


_SEPARATORS = {"form": ",", "simple": ",", "spaceDelimited": " ", "pipeDelimited": "|"}


class Parameter:
    """One parameter of an operation (``in``: path, query, header or cookie)."""

    __slots__ = (
        "allow_empty",
        "explode",
        "item_kinds",
        "json",
        "kinds",
        "location",
        "name",
        "pointer",
        "property_kinds",
        "required",
        "shape",
        "style",
        "validator",
    )

    def __init__(
        self,
        name: str,
        location: str,
        required: bool,
        style: str,
        explode: bool,
        shape: str,
        kinds: tuple[str, ...],
        item_kinds: tuple[str, ...],
        property_kinds: dict[str, tuple[str, ...]],
        validator: jsonschema_rs.Validator | None,
        json: bool,
        allow_empty: bool,
    ) -> None:
        self.name = name
        self.location = location
        self.required = required
        self.style = style
        self.explode = explode
        self.shape = shape
        """``array``, ``object`` or ``scalar``: how the text is read."""
        self.kinds = kinds
        self.item_kinds = item_kinds
        self.property_kinds = property_kinds
        self.validator = validator
        self.json = json
        """Described by ``content: application/json``: the value is JSON text."""
        self.allow_empty = allow_empty
        self.pointer = f"/{location}/{escape(name)}"

    def check(self, texts: list[str], out: list[Error], limit: int) -> None:
        """Validate the parameter's occurrences in the request (none: ``texts`` empty)."""
        if not texts:
            if self.required:
                out.append((self.pointer, f"the {self.location} parameter is required"))
            return
        value: object
        repeatable = self.shape == "array" and (
            self.location == "header"
            or (self.style == "form" and self.explode and self.location == "query")
        )
        if len(texts) > 1 and not repeatable:
            # One value serialized once: a second occurrence is one a backend may read instead.
            out.append((self.pointer, f"given {len(texts)} times; this parameter takes one value"))
            return
        if self.shape == "array":
            value = self._items(texts)
        elif self.shape == "object":
            found = self._object(texts)
            if found is None:
                return  # a serialization not read (form, exploded): left to the upstream
            value = found
        else:
            text = texts[0]
            if text == "" and self.allow_empty:
                return
            if self.json:
                try:
                    value = json.loads(text)
                except ValueError:
                    out.append((self.pointer, "not valid JSON"))
                    return
            else:
                value = coerce(text, self.kinds)
        if self.validator is not None:
            schema_errors(self.validator, value, self.pointer, out, limit)

    def _items(self, texts: list[str]) -> list[object]:
        if self.location == "header":
            texts = [", ".join(texts)]
        if self.explode and self.location == "query" and self.style == "form":
            parts = texts
        else:
            separator = _SEPARATORS.get(self.style, ",")
            parts = [part for text in texts for part in text.split(separator) if text != ""]
        if self.location == "header":
            parts = [part.strip() for part in parts]
        return [coerce(part, self.item_kinds) for part in parts]

    def _object(self, texts: list[str]) -> dict[str, object] | None:
        if self.style == "deepObject":
            return None  # gathered from name[key] query names by the operation
        if self.explode and self.location in ("query", "cookie"):
            return None  # an exploded query object is Operation.form_objects'; a cookie's: unread
        parts = ",".join(texts).split(",")
        out: dict[str, object] = {}
        for i in range(0, len(parts) - 1, 2):
            key = parts[i]
            out[key] = coerce(parts[i + 1], self.property_kinds.get(key, ()))
        return out

    def check_form_object(self, query: dict[str, list[str]], out: list[Error], limit: int) -> None:
        """An object in ``form`` style, exploded: each property is a query parameter of its own
        (``?role=admin&first=Alex``), so only the properties the schema names can be read."""
        found: dict[str, object] = {}
        for name, kinds in self.property_kinds.items():
            texts = query.get(name)
            if not texts:
                continue
            if len(texts) > 1:
                out.append((f"{self.pointer}/{escape(name)}", "given more than once"))
                continue
            found[name] = coerce(texts[0], kinds)
        if not found:
            if self.required:
                out.append((self.pointer, "the query parameter is required"))
            return
        if self.validator is not None:
            schema_errors(self.validator, found, self.pointer, out, limit)

    def check_deep_object(self, query: dict[str, list[str]], out: list[Error], limit: int) -> None:
        prefix = self.name + "["
        found: dict[str, object] = {}
        for key, texts in query.items():
            if key.startswith(prefix) and key.endswith("]"):
                name = key[len(prefix) : -1]
                if len(texts) > 1:
                    out.append((f"{self.pointer}/{escape(name)}", "given more than once"))
                    continue
                found[name] = coerce(texts[0], self.property_kinds.get(name, ()))
        if not found:
            if self.required:
                out.append((self.pointer, "the query parameter is required"))
            return
        if self.validator is not None:
            schema_errors(self.validator, found, self.pointer, out, limit)


class MediaType:
    """One entry of a ``content`` map: ``application/json``, ``application/*``, ``*/*``."""

    __slots__ = ("json", "name", "validator")

    def __init__(self, name: str, validator: jsonschema_rs.Validator | None, json: bool) -> None:
        self.name = name
        self.validator = validator
        self.json = json


def is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def find_media(content: dict[str, MediaType], media_type: str) -> MediaType | None:
    """The most specific entry of ``content`` for ``media_type`` (lower case, no parameters)."""
    found = content.get(media_type)
    if found is None:
        found = content.get(media_type.split("/", 1)[0] + "/*")
        if found is None:
            found = content.get("*/*")
    return found


class ResponseSpec:
    __slots__ = ("content",)

    def __init__(self, content: dict[str, MediaType]) -> None:
        self.content = content


JSON_TYPES_KEPT = 64
"""Content-Type fields an operation keeps the JSON entry of (:attr:`Operation.json_types`)."""


class Operation:
    __slots__ = (
        "body_content",
        "body_required",
        "cookies",
        "deep_objects",
        "form_objects",
        "has_body",
        "headers",
        "json_types",
        "method",
        "name",
        "path",
        "path_parameters",
        "query",
        "responses",
    )

    def __init__(
        self,
        method: str,
        path: str,
        name: str,
        parameters: list[Parameter],
        has_body: bool,
        body_required: bool,
        body_content: dict[str, MediaType],
        responses: dict[str, ResponseSpec],
    ) -> None:
        self.method = method
        self.path = path
        self.name = name
        """The operationId, or ``METHOD path``."""
        self.path_parameters = tuple(p for p in parameters if p.location == "path")
        query = [p for p in parameters if p.location == "query"]
        self.deep_objects = tuple(p for p in query if p.style == "deepObject")
        self.form_objects = tuple(
            p for p in query if p.shape == "object" and p.style == "form" and p.explode
        )
        self.query = tuple(
            p for p in query if p not in self.deep_objects and p not in self.form_objects
        )
        self.headers = tuple(p for p in parameters if p.location == "header")
        self.cookies = tuple(p for p in parameters if p.location == "cookie")
        self.has_body = has_body
        self.body_required = body_required
        self.body_content = body_content
        self.responses = responses
        self.json_types: dict[str, MediaType] = {}
        """Content-Type fields as requests sent them -> the entry of ``body_content`` whose
        schema checks their JSON body (charset UTF-8 or none): kept by the validation policy
        once the field was read, so that the next request with it reads nothing again. At most
        :data:`JSON_TYPES_KEPT` (the fields are the clients')."""

    def check_parameters(
        self,
        path_values: dict[str, str],
        query: str,
        headers: Headers,
        out: list[Error],
        limit: int,
    ) -> None:
        for parameter in self.path_parameters:
            text = path_values.get(parameter.name)
            parameter.check([] if text is None else [text], out, limit)
        if self.query or self.deep_objects or self.form_objects:
            values: dict[str, list[str]] = {}
            if not parse_query(query, values):
                out.append(("/query", "not valid UTF-8 once percent-decoded"))
                return
            for parameter in self.query:
                parameter.check(values.get(parameter.name, []), out, limit)
            for parameter in self.deep_objects:
                parameter.check_deep_object(values, out, limit)
            for parameter in self.form_objects:
                parameter.check_form_object(values, out, limit)
        for parameter in self.headers:
            parameter.check(headers.get_all(parameter.name), out, limit)
        if self.cookies:
            cookies = parse_cookies(headers.get_all("cookie"))
            for parameter in self.cookies:
                parameter.check(cookies.get(parameter.name, []), out, limit)

    def response(self, status: int) -> ResponseSpec | None:
        responses = self.responses
        found = responses.get(str(status))
        if found is None:
            found = responses.get(f"{status // 100}XX")
            if found is None:
                found = responses.get("default")
        return found


def parse_cookies(fields: list[str]) -> dict[str, list[str]]:
    """Name -> values of the ``Cookie`` fields (RFC 6265 §4.2: ``a=1; b=2``; a browser sends
    one field, HTTP/2 may split it in several). Values are taken as sent, quotes and all: cookies
    are not percent-encoded. A name given twice has two values (refused for a one-value
    parameter, as a backend may read either)."""
    found: dict[str, list[str]] = {}
    for field in fields:
        for pair in field.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name:
                found.setdefault(name.strip(), []).append(value.strip())
    return found


class PathEntry:
    """One path of the document: its template as a regular expression, and its operations."""

    __slots__ = ("allow", "names", "operations", "regex", "template")

    def __init__(
        self,
        template: str,
        regex: re.Pattern[str],
        names: tuple[str, ...],
        operations: dict[str, Operation],
    ) -> None:
        self.template = template
        self.regex = regex
        self.names = names
        self.operations = operations
        methods = set(operations)
        if "GET" in methods:
            methods.add("HEAD")
        self.allow = ", ".join(sorted(methods))


class OperationTable:
    """The document's paths, most specific first (a literal path before a template)."""

    __slots__ = ("base_path", "entries", "literal")

    def __init__(self, base_path: str, entries: list[PathEntry]) -> None:
        self.base_path = base_path
        self.entries = tuple(entries)
        self.literal = {e.template: e for e in entries if not e.names}

    def find(self, path: str) -> tuple[PathEntry, dict[str, str]] | None:
        """The entry of ``path`` (decoded) and its parameters, or ``None``."""
        base = self.base_path
        if base:
            if path == base:
                path = "/"
            elif path.startswith(base) and path[len(base)] == "/":
                path = path[len(base) :]
            else:
                return None
        entry = self.literal.get(path)
        if entry is None and len(path) > 1 and path.endswith("/"):
            entry = self.literal.get(path[:-1])
        if entry is not None:
            return entry, {}
        for entry in self.entries:
            if entry.names:
                m = entry.regex.match(path)
                if m is not None:
                    groups = m.groups()
                    return entry, {entry.names[i]: groups[i] for i in range(len(groups))}
        return None
