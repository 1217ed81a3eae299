"""A service's OpenAPI document: read from its file, every value remembering its line, and
checked against the OpenAPI meta-schema of its version (3.0 or 3.1).

The document is read with PyYAML's composer (JSON is YAML), so an error names the document's
file and line: ``orders.yaml:14:9: paths./orders.post.parameters[0]: "name" is a required
property``. What PyYAML lets pass silently is refused here: duplicate keys (two ``/orders``
entries, of which one would be lost), tags, and alias bombs.

The meta-schemas are the OpenAPI Initiative's (``schemas/``), validated with jsonschema-rs (a
runtime dependency already): openapi-spec-validator, which ships the same schemas, would add
a dependency for the same verdict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from portico.config.document import compose

__all__ = ["DocumentError", "OpenAPIDocument", "Pointer", "load_document"]

Pointer = tuple[str | int, ...]
"""A place in the document, as keys and indexes: ``("paths", "/orders", "post")``."""

_MAX_NODES = 1_000_000
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCHEMAS = Path(__file__).with_name("schemas")


class DocumentError(ValueError):
    """The document cannot be used; ``problems`` are its one-line messages, each naming the
    document's file and line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class OpenAPIDocument:
    path: Path
    data: dict[str, Any]
    version: str
    """``3.0`` or ``3.1``."""
    lines: dict[Pointer, tuple[int, int]]
    """Line and column (1-based) of each value."""

    def where(self, pointer: Pointer) -> str:
        """``file:line:column: dotted.path`` of the nearest located value."""
        at = pointer
        while at and at not in self.lines:
            at = at[:-1]
        line, column = self.lines.get(at, (1, 1))
        return f"{self.path}:{line}:{column}: {dotted(pointer)}" if pointer else f"{self.path}:1:1"

    def problem(self, pointer: Pointer, message: str) -> str:
        return f"{self.where(pointer)}: {message}"


def dotted(pointer: Pointer) -> str:
    out = ""
    for part in pointer:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_document(path: str | Path) -> OpenAPIDocument:
    """The document at ``path``, checked against its version's meta-schema; raises
    :class:`DocumentError` listing what is wrong."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DocumentError([f"{path}: cannot read the OpenAPI document: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise DocumentError([f"{path}: the OpenAPI document is not UTF-8 text"]) from None
    try:
        node = compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        reason = getattr(exc, "problem", None) or "not valid YAML or JSON"
        raise DocumentError([f"{where}: {reason}"]) from None
    if node is None:
        raise DocumentError([f"{path}: the OpenAPI document is empty"])
    reader = _Reader(path)
    data = reader.value(node, ())
    if reader.problems:
        raise DocumentError(reader.problems)
    if not isinstance(data, dict):
        raise DocumentError([f"{path}:1:1: an OpenAPI document is a mapping"])
    version = str(data.get("openapi", ""))
    document = OpenAPIDocument(path, data, version[:3], reader.lines)
    if version[:4] not in ("3.0.", "3.1."):
        found = f"openapi: {version}" if version else "no openapi field"
        raise DocumentError(
            [document.problem(("openapi",), f"{found}: Portico reads OpenAPI 3.0 and 3.1")]
        )
    problems = [document.problem(pointer, message) for pointer, message in _meta_errors(document)]
    if problems:
        raise DocumentError(problems)
    return document


def _meta_errors(document: OpenAPIDocument) -> Iterator[tuple[Pointer, str]]:
    seen: set[Pointer] = set()
    for error in _meta_validator(document.version).iter_errors(document.data):
        pointer = tuple(error.instance_path)
        # The 3.0 schema's oneOf branches report the same place several times: the first says it.
        if pointer in seen:
            continue
        seen.add(pointer)
        yield pointer, _short(error.message)


@cache
def _meta_validator(version: str) -> jsonschema_rs.Validator:
    schema = json.loads((_SCHEMAS / f"oas-{version}.json").read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema, offline=True)


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


class _Reader:
    """Plain data from PyYAML's nodes, with the line of each value."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[Pointer, tuple[int, int]] = {}
        self.problems: list[str] = []
        self._budget = _MAX_NODES
        self._constructor = yaml.SafeLoader("")

    def _problem(self, node: yaml.Node, pointer: Pointer, message: str) -> None:
        mark = node.start_mark
        where = f"{self.path}:{mark.line + 1}:{mark.column + 1}"
        self.problems.append(f"{where}: {dotted(pointer)}: {message}" if pointer else message)

    def value(self, node: yaml.Node, pointer: Pointer) -> Any:
        self._budget -= 1
        if self._budget < 0:
            if self._budget == -1:
                self._problem(node, pointer, "the document is too large (aliases?)")
            return None
        self.lines[pointer] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                self._problem(node, pointer, f"tag {node.tag} is not supported")
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self._constructor.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | bool) or key_node.tag.endswith(":merge"):
                    self._problem(key_node, pointer, "keys are strings (merges are not read)")
                    continue
                # YAML reads 200: as a number; OpenAPI's response codes are strings.
                name = str(key).lower() if isinstance(key, bool) else str(key)
                if name in out:
                    self._problem(key_node, (*pointer, name), f"duplicate key {name!r}")
                    continue
                out[name] = self.value(value_node, (*pointer, name))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                self._problem(node, pointer, f"tag {node.tag} is not supported")
            return [self.value(item, (*pointer, i)) for i, item in enumerate(node.value)]
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            self._problem(node, pointer, f"tag {node.tag} is not supported")
            return None
        # A YAML date (version: 2024-01-31) or timestamp is a string to JSON and to OpenAPI.
        return value if isinstance(value, str | int | float | bool | None) else str(value)
