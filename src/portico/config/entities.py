"""The entity sections of a config as they are written: what ``portico apply`` stores, ``diff``
compares and ``export`` writes back (docs/sync.md).

The *entities* are ``services``, ``routes`` and ``tenants`` (with their consumers): what the
admin API edits. The other sections (``gateway``, ``operations``, ``admin``, ``database``,
``redis``, ``entities``, ``identity``) are how this installation runs and always come from the
file.

An :data:`EntityDocument` is JSON data, the sections as the user wrote them: ``${VAR}``
references kept, never their values (each process interpolates them from its own environment
when it loads the document), durations and sizes as written, timestamps as ISO 8601 text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import yaml

from portico.config.document import Located

__all__ = [
    "ENTITY_SECTIONS",
    "EntityDocument",
    "as_written",
    "document_sha256",
    "entities_of",
]

ENTITY_SECTIONS = ("services", "routes", "tenants")
EntityDocument = dict[str, Any]
_STR = "tag:yaml.org,2002:str"


def as_written(value: Any, located: Located) -> Any:
    """The data the reader built (``value``) with every string as written in the file, before
    interpolation, and the values JSON has no type for as text."""
    if isinstance(value, dict):
        return {
            str(key): as_written(item, located.children.get(key, Located(None)))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            as_written(item, located.children.get(index, Located(None)))
            for index, item in enumerate(value)
        ]
    node = located.node
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        return node.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def entities_of(document: Mapping[str, Any]) -> EntityDocument:
    """The entity sections of a document as written (empty ones when it has none), in order."""
    empty: dict[str, Any] = {"services": {}, "routes": [], "tenants": {}}
    out: EntityDocument = {}
    for section in ENTITY_SECTIONS:
        value = document.get(section)
        out[section] = empty[section] if value is None else value
    return out


def canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def document_sha256(document: EntityDocument) -> str:
    """The SHA-256 of a document's canonical JSON (keys sorted): equal documents, equal hash."""
    return hashlib.sha256(canonical(document).encode()).hexdigest()
